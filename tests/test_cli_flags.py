"""trl-style flags on ``run`` and ``compare``: each is the ``--set`` keys its help names, nothing more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.config import to_dict
from alignkit.eval.summary import EvalSummary

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture
def captured(monkeypatch):
    """Run and compare stop where training would start, keeping what they would have run."""
    seen = {}

    def fake_run(recipe, run_dir, overwrite=False):
        seen.update(recipe=recipe, out=run_dir)
        return EvalSummary(results={"ok": True})

    def fake_compare(plan, **_):
        seen.update(plan=plan)
        return {}

    monkeypatch.setattr("alignkit.run.pipeline.run_recipe", fake_run)
    monkeypatch.setattr("alignkit.compare.comparison.run_comparison", fake_compare)
    monkeypatch.setattr("alignkit.report.build.screen_table", lambda out: "")
    return seen


def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Review {i}:", "chosen": " great film", "rejected": " dull film"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_run_flags_are_their_set_keys(tmp_path, captured):
    data = pairs_file(tmp_path)
    flags = invoke("run", "--config", RECIPES / "dpo_imdb.yaml", "--output_dir", tmp_path / "o",
                   "--model_name_or_path", "my-org/my-model", "--dataset_name", data, "--dataset_split",
                   "test",
                   "--dataset_config", "default", "--set", "eval.judge=heldout-reward-model")
    assert flags.exit_code == 0, flags.output
    by_flags = to_dict(captured["recipe"])
    assert captured["out"] == tmp_path / "o"
    sets = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", tmp_path / "o", "--set",
                  "model.name_or_path=my-org/my-model",
                  "--set", f"preferences.source={data}", "--set", "task.dataset=preferences",
                  "--set", "preferences.split=test", "--set", "preferences.config=default",
                  "--set", "eval.judge=heldout-reward-model")
    assert sets.exit_code == 0, sets.output
    assert by_flags == to_dict(captured["recipe"])
    assert by_flags["model"]["name_or_path"] == "my-org/my-model"
    assert by_flags["preferences"]["source"] == str(data) and by_flags["task"]["dataset"] == "preferences"
    assert (by_flags["preferences"]["split"], by_flags["preferences"]["config"]) == ("test", "default")


def test_dataset_name_of_the_hub_becomes_hf_source_and_a_conflicting_set_is_refused(tmp_path, captured):
    from alignkit.trl_names import trl_overrides
    assert trl_overrides(dataset_name="Anthropic/hh-rlhf")[0] == 'preferences.source="hf:Anthropic/hh-rlhf"'
    assert trl_overrides(model_name_or_path="123") == ['model.name_or_path="123"']  # a string, never a number
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(tmp_path / "o"),
                                       "--model_name_or_path", "a", "--set", "model.name_or_path=b"])
    assert result.exit_code == 1 and "recipe" not in captured
    assert result.output.strip().splitlines() == [
        'alignkit: error: --model_name_or_path sets model.name_or_path to "a", and --set '
        'model.name_or_path=b to another value; give one']
    same = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", tmp_path / "o", "--model_name_or_path", "a",
                  "--set", "model.name_or_path=a")  # the same value twice is no conflict
    assert same.exit_code == 0 and captured["recipe"].model.name_or_path == "a"


@pytest.mark.parametrize("name", ["./typo.jsonl", "../data/pairs", "/data/x", "pairs.parquet", "my.csv"])
def test_dataset_name_that_looks_like_a_path_and_is_missing_is_a_missing_file(tmp_path, captured, name):
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--dataset_name", name])
    assert result.exit_code == 1 and "recipe" not in captured
    assert result.output.strip().splitlines() == [
        f"alignkit: error: --dataset_name {name}: file not found (a Hub dataset is named ORG/NAME)"]


def test_gpus_per_entry_on_a_machine_without_gpus_is_refused(tmp_path, monkeypatch, tiny_overrides):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sets = [a for s in tiny_overrides for a in ("--set", s)]
    result = CliRunner().invoke(main, ["compare", "dpo", "--gpus-per-entry", "1",
                                       "--out", str(tmp_path / "c"), *sets])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "alignkit: error: --jobs 1 with --gpus-per-entry 1 needs 1 GPU(s); 0 visible (none); lower --jobs, "
        "or --gpus-per-entry 0 for CPU")
    assert not (tmp_path / "c").exists()


def test_compare_flags_reach_every_entry(tmp_path, captured):
    result = invoke("compare", "dpo", "ipo=dpo:loss=ipo", "--output_dir", tmp_path / "c",
                    "--model_name_or_path", "my-org/m", "--set", "eval.n_prompts=7")
    assert result.exit_code == 0, result.output
    plan = captured["plan"]
    assert plan.out == tmp_path / "c" and len(plan.entries) == 2
    assert {e.recipe.model.name_or_path for e in plan.entries} == {"my-org/m"}
    assert "--set model.name_or_path=\"my-org/m\"" in plan.argv


def test_compare_config_is_a_comparison_yaml(tmp_path, captured):
    spec = tmp_path / "cmp.yaml"
    spec.write_text("name: mine\nentries: [{label: dpo, method: dpo}, {label: ipo, method: dpo, dpo: {loss: "
                    "ipo}}]\n")
    result = invoke("compare", "--config", spec, "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    assert [e.label for e in captured["plan"].entries] == ["dpo", "ipo"]
    assert captured["plan"].entries[1].recipe.method_config("dpo").loss == "ipo"


@pytest.mark.parametrize("args, fragment", [
    (["run"], "no recipe"),
    (["run", "a.yaml", "--config", "b.yaml"], "two recipes given"),
    (["compare"], "no entries"),
])
def test_missing_or_doubled_recipe_is_one_line(args, fragment):
    result = invoke(*args)
    assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["run", "compare"])
def test_dash_h_is_help_and_documents_the_flags(command):
    text = invoke(command, "-h").output
    assert text == invoke(command, "--help").output
    for flag, key in (("--model_name_or_path", "model.name_or_path"), ("--dataset_name",
                                                                       "preferences.source"),
                      ("--dataset_split", "preferences.split"), ("--dataset_config", "preferences.config"),
                      ("--output_dir", ""), ("--config", "")):
        assert flag in text and key in text
    assert invoke("-h").exit_code == 0
