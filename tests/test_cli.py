"""The command line as users drive it: one-line errors for bad input, a complete run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignkit.cli import main

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("alignkit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output  # progress lines may precede it
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0]


def test_version_and_list_json_include_plugins():
    assert invoke("--version").output.startswith("alignkit, version ")
    listing = json.loads(invoke("list", "--json").output)
    assert {"sppo_hard", "simpo", "orpo", "dpop"} <= {e["name"] for e in listing["losses"]}  # dpop: plugins/
    assert {"sigmoid", "ipo", "hinge", "robust"} <= {e["name"] for e in listing["losses"]}
    assert "tiny-gpt2-imdb" in [e["name"] for e in listing["models"]]
    recipes = {e["name"]: e["doc"] for e in listing["recipes"]}  # the compare entry names, e.g. simpo
    assert recipes["simpo_imdb"] == "SimPO (Meng et al. 2024) on the DPO paper's IMDb task"


@pytest.mark.parametrize("text, fragments", [
    (None, ["missing.yaml: recipe file not found"]),
    ("method: dpo\ndpo: {beta: 0.1\n", ["malformed YAML"]),
    ("method: dpo\ndpo: {loss: sigmiod}\n", ["dpo.loss: unknown loss 'sigmiod'; did you mean 'sigmoid'"]),
    ("method: dpo\ndpo: {betta: 0.1}\n", ["dpo.betta: unknown key (did you mean 'beta'?)"]),
])
def test_bad_recipes_exit_with_one_clear_line(tmp_path, text, fragments):
    path = tmp_path / "missing.yaml"
    if text is not None:
        path.write_text(text)
    assert_one_line_error(invoke("run", path, "--out", tmp_path / "run"), *fragments)
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("make_model", ["missing", "empty"])
def test_unloadable_model_is_one_line_naming_the_key(tmp_path, tiny_overrides, make_model):
    model = tmp_path / "no_such_model"
    if make_model == "empty":
        model.mkdir()  # a folder without config or tokenizer files
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    result = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", tmp_path / "run", *sets,
                    "--set", f"model.name_or_path={model}")
    assert_one_line_error(result, f"model.name_or_path: cannot load '{model}'")


def test_dataset_missing_chosen_column(tmp_path, tiny_overrides):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "The film", "good": " was great", "rejected": " was bad"}) + "\n")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    result = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", tmp_path / "run", *sets,
                    "--set", f"preferences.source={data}")
    assert_one_line_error(result, f"{data}: missing column 'chosen'", "preferences.columns")


def test_dpo_run_writes_the_run_directory_contract(tmp_path, tiny_overrides):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    out = tmp_path / "run"
    result = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", out, *sets, "--set", "dpo.epochs=1")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval" / "summary.json").read_text())
    for key in ("method", "gold_reward_mean", "gold_reward_std", "kl_mean", "win_rate_vs_reference",
                "win_rate_ci_low", "win_rate_ci_high", "n_samples", "temperature"):
        assert key in summary
    assert summary["n_samples"] == 24 and summary["kl_mean"] >= 0
    assert summary["win_rate_ci_low"] <= summary["win_rate_vs_reference"] <= summary["win_rate_ci_high"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["recipe"]["method"] == "dpo"
    assert {"torch", "transformers", "trl"} <= set(manifest["versions"])
    assert manifest["gold_reward_meta"]["heldout_accuracy"] > 0.6
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    dpo = [r for r in records if r["stage"] == "dpo"]
    assert dpo and {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "logps/chosen", "logps/rejected"} <= set(dpo[0])
    samples = (out / "eval" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 24
    assert (out / "model" / "config.json").exists() and (out / "eval" / "summary.png").exists()

    # a second run into the same directory is refused, and the first run's files stay intact
    again = invoke("run", RECIPES / "dpo_imdb.yaml", "--out", out, *sets)
    assert_one_line_error(again, "already holds a run")
    assert json.loads((out / "eval" / "summary.json").read_text()) == summary
