"""`alignkit compare` / `report` / `eval` on the tiny model: entries and variants, fair-by-construction
refusal, shared stages computed once, reuse and exact invalidation of finished runs, and a report that
rebuilds identically from the run directories."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import alignkit.stages.builder as builder
from alignkit.cli import main
from alignkit.compare.plan import parse_entry, plan_comparison
from alignkit.errors import ConfigError
from alignkit.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "alignkit" / "recipes"
FAST = ["eval.every_steps=2", "eval.temperatures=[0.0]", "eval.n_prompts=16", "dpo.max_steps=4",
        "dpo.batch_size=8",
        "sft.max_steps=2", "ppo.steps=2", "ppo.rollout_size=8", "ppo.minibatch_size=8",
        "ppo.max_new_tokens=8",
        "ppo.prompt_pool=32", "reward_model.max_steps=4", "preferred_ft.max_steps=2"]


def sets(tiny_overrides, *extra, method=None):
    """--set arguments; for one ``method``'s run only the sections it reads (run refuses another's)."""
    fast = [o for o in FAST if method is None or o.split(".")[0] in (method, "eval")]
    return [a for o in [*tiny_overrides, *fast, *extra] for a in ("--set", o)]


def compare(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)], catch_exceptions=False)


def test_entries_variants_and_sweeps_expand_into_labelled_runs(tiny_overrides):
    label, raw = parse_entry("ipo=dpo:loss=ipo,beta=0.5")
    assert (
        label == "ipo"
        and raw["method"] == "dpo"
        and raw["dpo"]["loss"] == "ipo"
        and raw["dpo"]["beta"] == 0.5
    )
    assert parse_entry("dpo")[1] == parse_entry(str(RECIPES / "dpo_imdb.yaml"))[1]  # one place for defaults
    plan = plan_comparison(["dpo", "ipo=dpo:loss=ipo", "ppo"], sweeps=["dpo.beta=0.1,1"], seeds=2,
                           overrides=[*tiny_overrides, *FAST])
    labels = [e.label for e in plan.entries]
    assert labels == ["dpo@beta=0.1#seed0", "dpo@beta=0.1#seed1", "dpo@beta=1#seed0", "dpo@beta=1#seed1",
                      "ipo@beta=0.1#seed0", "ipo@beta=0.1#seed1", "ipo@beta=1#seed0", "ipo@beta=1#seed1",
                      "ppo#seed0", "ppo#seed1"]  # the dpo.beta sweep applies to dpo entries only
    by_label = {e.label: e.recipe for e in plan.entries}
    assert by_label["ipo@beta=1#seed1"].method_config("dpo").loss == "ipo"
    assert by_label["ipo@beta=1#seed1"].method_config("dpo").beta == 1
    assert [by_label[f"ppo#seed{s}"].train_seed for s in (0, 1)] == [0, 1]
    assert {r.seed for r in by_label.values()} == {0}  # shared stages keep their seed


def test_the_bundled_comparison_file_validates(tiny_overrides):
    plan = plan_comparison([str(RECIPES / "compare_imdb.yaml")], overrides=tiny_overrides)
    groups = {e.group for e in plan.entries}
    assert {"dpo", "ppo", "ppo_gt", "unlikelihood", "preferred_ft", "best_of_n", "sft"} <= groups
    dpo = sorted((e.recipe.method_config("dpo").beta, e.recipe.method_config("dpo").lr)
                 for e in plan.entries if e.group == "dpo")
    ppo = sorted((e.recipe.method_config("ppo").target_kl, e.recipe.method_config("ppo").lr)
                 for e in plan.entries if e.group == "ppo")
    assert sorted({beta for beta, _ in dpo}) == [0.05, 0.1, 1, 5]
    assert sorted({target for target, _ in ppo}) == [3, 6, 9, 12]
    # a fair grid: the two contenders get the same number of settings, each at its default lr and half of it
    assert len(dpo) == len(ppo) == 8
    for name, settings in (("dpo", dpo), ("ppo", ppo)):
        default = load_recipe(str(RECIPES / f"{name}_imdb.yaml")).method_config(name).lr
        assert sorted({lr for _, lr in settings}) == [default / 2, default]


def test_disagreeing_shared_sections_are_refused_in_one_line(tmp_path, tiny_overrides):
    other = tmp_path / "dpo_other.yaml"
    other.write_text((RECIPES / "dpo_imdb.yaml").read_text().replace("n_prompts: 2000", "n_prompts: 1000"))
    result = CliRunner().invoke(main, ["compare", "ppo", str(other), "--out", str(tmp_path / "cmp")],
                                catch_exceptions=False)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("alignkit: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "preferences.n_prompts: 2000 vs 1000" in errors[0] and "'ppo'" in errors[0]
    assert not (tmp_path / "cmp").exists()  # refused before anything was written


def run_states(out: Path) -> dict[str, str]:
    return {e["label"]: e["state"] for e in json.loads((out / "compare.json").read_text())["entries"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, compare_overrides, cache_dir):
    """One small comparison: DPO, a labelled IPO variant, PPO and SFT."""
    import os

    os.environ["ALIGNKIT_CACHE"] = str(cache_dir)
    overrides = list(compare_overrides)
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = compare("dpo", "ipo=dpo:loss=ipo", "ppo", "sft", "--out", out, *sets(overrides))
    assert result.exit_code == 0, result.output
    return out, overrides, result.output


def test_compare_writes_every_output(finished):
    import pandas as pd

    out, _, output = finished
    for name in ("comparison.csv", "winrates.csv", "trajectories.csv", "frontier.png", "temperature.png",
                 "frontier_compute.png", "report.md", "compare.json"):
        assert (out / name).is_file(), name
    frame = pd.read_csv(out / "comparison.csv")
    assert len(frame) == 4 * 2  # 4 entries x 2 temperatures (1.0 and greedy)
    greedy = frame[frame["temperature"] == 0]
    assert greedy["kl_mean"].isna().all() and (greedy["kl_kind"] == "none (greedy)").all()
    primary = frame[frame["temperature"] == 1]
    assert (primary["kl_kind"] == "exact").all() and (primary["kl_mean"] >= 0).all()
    by_label = primary.set_index("label")
    # PPO is scored by the reward model it used
    assert math.isfinite(by_label.loc["ppo", "proxy_reward_mean"])
    assert pd.isna(by_label.loc["dpo", "proxy_reward_mean"])  # DPO used none, so it has no proxy column
    assert primary.set_index("label").loc["dpo", "train_steps"] == 4
    wins = pd.read_csv(out / "winrates.csv").set_index(["row", "column"])
    for (a, b), row in wins.iterrows():  # antisymmetry: w_ab + w_ba = 1, intervals mirrored
        assert row["win_rate"] + wins.loc[(b, a), "win_rate"] == pytest.approx(1.0)
        assert row["ci_low"] + wins.loc[(b, a), "ci_high"] == pytest.approx(1.0)
    trajectory = pd.read_csv(out / "trajectories.csv")
    assert set(trajectory[trajectory["label"] == "dpo"]["step"]) == {2, 4}
    # each checkpoint's budget so far
    dpo_points = trajectory[trajectory["label"] == "dpo"].sort_values("step")
    assert (
        list(dpo_points["budget_steps"]) == [2, 4]
        and dpo_points["budget_train_tokens"].is_monotonic_increasing
    )
    assert (primary["compute_flops"] > 0).all() and by_label.loc["ppo", "compute_sampled_tokens"] > 0
    assert by_label.loc["dpo", "compute_forward_tokens"] > 0  # its reference pass over the pairs
    report = (out / "report.md").read_text()
    assert "paired bootstrap" in report and "## At matched KL" in report and "## Caveats" in report
    assert "## At matched compute" in report and "6N per trained token" in report
    assert "Holm-adjusted" in report and "0 comparisons adjusted" in report  # one seed: nothing to adjust
    # 4 methods: a row a pair
    assert report.count(" | inconclusive (one run each: evaluation noise only) |") == 6
    assert (
        "**dpo vs ipo** (the first two methods named)" in report
        and "What it would take: paired seeds" in report
    )
    kl_of = by_label["kl_mean"]
    assert f"| dpo (KL {kl_of['dpo']:.2f}) |" in report  # head to head: each entry's KL beside its win rates
    assert wins.loc[("dpo", "ppo"), "row_kl"] == pytest.approx(kl_of["dpo"], rel=1e-5)
    assert report.startswith("# Comparison: compare\n\nCommand: `alignkit compare dpo ipo=dpo:loss=ipo ppo "
                             "sft")
    assert "frontier.png" in report and "temperature.png" in report
    assert "win rate" in output and "dpo" in output  # the one-screen table


def test_rerun_reuses_adding_an_entry_trains_only_it(finished, monkeypatch):
    out, overrides, _ = finished
    model = out / "runs" / "dpo" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    assert compare("dpo", "ipo=dpo:loss=ipo", "ppo", "sft", "--out", out, *sets(overrides)).exit_code == 0
    assert set(run_states(out).values()) == {"current"} and model.stat().st_mtime_ns == stamp
    result = compare("dpo", "ipo=dpo:loss=ipo", "ppo", "sft", "pft=preferred_ft", "--out", out,
                     *sets(overrides))
    assert result.exit_code == 0
    assert run_states(out) == {"dpo": "current", "ipo": "current", "ppo": "current", "sft": "current",
                               "pft": "train"}


def test_upstream_change_invalidates_exactly_what_is_downstream(finished):
    """More preference prompts: the pair-trained runs retrain; SFT (which never read the pairs) is reused.
    A new temperature only re-evaluates."""
    out, overrides, _ = finished
    refused = compare("dpo", "sft", "--out", out, *sets(overrides, "preferences.n_prompts=40"))
    assert refused.exit_code == 1 and "dpo (its preferences stage changed" in refused.output  # a finished run
    result = compare("dpo", "sft", "--out", out, "--overwrite", *sets(overrides, "preferences.n_prompts=40"))
    assert result.exit_code == 0, result.output
    assert run_states(out) == {"dpo": "train", "sft": "current"}
    model = out / "runs" / "sft" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    result = compare("dpo", "sft", "--out", out, "--temperatures", "0.5", *sets(overrides,
                                                                                "preferences.n_prompts=40"))
    assert result.exit_code == 0
    assert run_states(out) == {"dpo": "evaluate", "sft": "evaluate"} and model.stat().st_mtime_ns == stamp
    summary = json.loads((out / "runs" / "sft" / "eval" / "summary.json").read_text())
    assert [row["temperature"] for row in summary["by_temperature"]] == [1.0, 0.5]


def test_report_rebuilds_the_tables_identically(finished, tmp_path):
    out, _, _ = finished
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "again")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("comparison.csv", "winrates.csv", "trajectories.csv"):
        assert (tmp_path / "again" / name).read_text() == (out / name).read_text(), name


def test_margin_reaches_the_plan_the_record_and_every_sentence(finished, tmp_path, tiny_overrides):
    plan = plan_comparison(["dpo", "ppo"], overrides=tiny_overrides, margin=0.05)
    assert plan.margin == 0.05 and "--margin 0.05" in plan.argv
    assert plan_comparison(["dpo", "ppo"], overrides=tiny_overrides).margin == 0.02  # the README's default
    out, _, _ = finished
    assert json.loads((out / "compare.json").read_text())["margin"] == 0.02
    again = tmp_path / "wide"
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(again), "--margin", "0.5"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    index = json.loads((again / "compare.json").read_text())
    assert index["margin"] == 0.5 and index["argv"][-2:] == ["--margin", "0.5"]
    assert index["matched_kl"] and all(v["margin"] == 0.5 and "equivalence margin \u00b10.5" in v["sentence"]
                                       for v in index["matched_kl"])
    assert "\u00b10.5 (--margin)" in (again / "report.md").read_text()
    refused = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "no"), "--margin", "0"])
    assert refused.exit_code == 2 and not (tmp_path / "no").exists()


def test_eval_reevaluates_a_finished_run_with_another_judge(finished, tmp_path):
    out, _, _ = finished
    inside = out / "runs" / "ppo"
    before = {p: p.read_bytes() for p in inside.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["eval", str(inside), "--judge", "gold", "--set",
                                       "eval.temperatures=[0.5]"],
                                catch_exceptions=False)  # a comparison's runs share their evaluation
    assert (
        result.exit_code == 1
        and "belongs to a comparison" in result.output
        and "eval.temperatures" in result.output
    )
    assert {p: p.read_bytes() for p in inside.rglob("*") if p.is_file()} == before
    assert CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "rep")]).exit_code == 0
    run = tmp_path / "ppo"  # the same run copied out of the comparison may be re-evaluated on its own
    shutil.copytree(inside, run)
    result = CliRunner().invoke(main, ["eval", str(run), "--judge", "reward-model"], catch_exceptions=False)
    assert result.exit_code == 1 and "reward-model is the reward model that ppo optimises" in result.output
    result = CliRunner().invoke(main, ["eval", str(run), "--judge", "reward-model", "--set",
                                       "eval.allow_self_judging=true"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["judge"] == "reward-model" and summary["self_judged"] is True
    samples = [json.loads(x) for x in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert all(s["judge_score"] == pytest.approx(s["proxy_reward"]) for s in samples)  # the RM judged


def test_beta_sweep_computes_reference_logprobs_once(tmp_path, tiny_overrides, monkeypatch):
    calls = []
    real = builder.reference_logprobs
    monkeypatch.setattr(builder, "reference_logprobs", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    result = compare("dpo", "--sweep", "dpo.beta=0.05,0.1,1,5", "--out", tmp_path / "cmp",
                     *sets(tiny_overrides, "dpo.max_steps=1", "eval.every_steps=0", "eval.temperatures=[]"))
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert len(list((tmp_path / "cache" / "reference_logps").glob("*.safetensors"))) == 1
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (tmp_path / "cmp" / "runs").iterdir()]
    assert len(manifests) == 4 and len({m["artifact_keys"]["reference_logps"] for m in manifests}) == 1


@pytest.mark.parametrize("command", [["eval", "{d}"], ["report", "{d}", "--out", "{d}/out"]])
def test_eval_and_report_of_a_folder_that_is_no_run_fail_in_one_line(tmp_path, command):
    result = CliRunner().invoke(main, [c.format(d=tmp_path) for c in command], catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"alignkit: error: {tmp_path}: not a run "
                                                             "directory")


@pytest.mark.parametrize("command", ["compare", "report"])
def test_a_foreign_output_folder_is_refused_and_left_alone(finished, tmp_path, command):
    out, overrides, _ = finished
    (tmp_path / "notes.md").write_text("mine")
    args = ["dpo", *sets(overrides)] if command == "compare" else [str(out)]
    result = CliRunner().invoke(main, [command, *args, "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 1 and "is not an alignkit comparison folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


def test_an_interrupted_run_inside_a_comparison_is_resumed(finished):
    """A comparison killed mid-run: its unfinished run is resumed (same folder), the others reused."""
    out, overrides, _ = finished
    manifest_path = out / "runs" / "sft" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="running", pid=2 ** 22 + 12345)  # a writer that no longer exists
    manifest_path.write_text(json.dumps(manifest))
    result = compare("dpo", "sft", "--out", out, "--temperatures", "0.5", *sets(overrides,
                                                                                "preferences.n_prompts=40"))
    assert result.exit_code == 0, result.output
    assert run_states(out) == {"dpo": "current", "sft": "resume"}
    assert json.loads(manifest_path.read_text())["status"] == "done"


@pytest.mark.parametrize("command", ["compare", "run", "report"])
def test_an_impossible_out_is_one_line(finished, command):
    """Found in the second new-user pass: a folder that cannot be created ended in a traceback."""
    out, overrides, _ = finished
    args = {"compare": ["dpo", *sets(overrides)], "run": [str(RECIPES / "dpo_imdb.yaml"), *sets(overrides,
                                                                                                method="dpo")],
            "report": [str(out)]}[command]
    result = CliRunner().invoke(main, [command, *args, "--out", "/proc/alignkit-cannot-write-here"],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "alignkit: error: /proc/alignkit-cannot-write-here: cannot" in result.output.strip().splitlines()[-1]
    )


@pytest.mark.parametrize("args, fragment", [
    (["nosuchmethod"], "compare: entry 'nosuchmethod': not a registered method"),
    (["nosuchmethod"], "a bundled recipe name (best_of_n, dpo, grpo, ipo, kto, orpo, ppo, "),
    (["x=dpo:loss"], "compare: entry 'x=dpo:loss': expected KEY=VALUE after ':', got 'loss'"),
    (["dpo", "dpo"], "compare: two entries are labelled 'dpo'"),
    (["dpo", "--sweep", "dpo.beta="], "--sweep dpo.beta=: no values"),
    (["dpo", "--sweep", "dpo.nokey=1,2"], "compare entry dpo@nokey=1: dpo.nokey: unknown key"),
    (["dpo", "--temperatures", "a,b"], "--temperatures a,b: expected numbers separated by commas"),
    (["{notlist}"], "notlist.yaml: entries: expected a list"),
    (["{nomethod}"], "nomethod.yaml: entries[0]: method: required key is missing"),
    (["{compare}", "dpo"], "is a whole comparison; pass it as the only entry"),
])
def test_bad_compare_input_is_one_line_and_writes_nothing(tmp_path, args, fragment):
    (tmp_path / "notlist.yaml").write_text("name: c\nentries: dpo\n")
    (tmp_path / "nomethod.yaml").write_text("name: c\nentries:\n  - {label: x}\n")
    paths = {"notlist": tmp_path / "notlist.yaml", "nomethod": tmp_path / "nomethod.yaml",
             "compare": RECIPES / "compare_imdb.yaml"}
    result = CliRunner().invoke(main, ["compare", *(a.format(**paths) for a in args), "--out",
                                       str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("alignkit: error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert not (tmp_path / "out").exists()


def test_eval_refuses_a_training_setting_and_changes_nothing(finished, tmp_path):
    out, _, _ = finished
    run = tmp_path / "dpo"
    shutil.copytree(out / "runs" / "dpo", run)
    manifest = (run / "manifest.json").read_bytes()
    result = CliRunner().invoke(main, ["eval", str(run), "--set", "dpo.beta=0.5"], catch_exceptions=False)
    assert result.exit_code == 1 and "eval: dpo.beta is a training setting (0.1 -> 0.5)" in result.output
    assert (run / "manifest.json").read_bytes() == manifest


def test_a_shared_stage_setting_reaches_every_entry_that_uses_it(tiny_overrides):
    plan = plan_comparison(["dpo", "ppo"], overrides=[*tiny_overrides, "reward_model.max_steps=10"])
    assert {e.label: e.recipe.method_config("reward_model").max_steps for e in plan.entries} == {"dpo": 10,
                                                                                                 "ppo": 10}
    with pytest.raises(ConfigError, match="reward_model.bogus_key: unknown key"):
        plan_comparison(["dpo", "ppo"], overrides=[*tiny_overrides, "reward_model.bogus_key=1"])


def test_report_warns_when_the_runs_used_different_package_versions(finished, tmp_path):
    out, _, _ = finished
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    # earlier tests change the entries
    last = json.loads((copy / "compare.json").read_text())["entries"][-1]["label"]
    manifest = copy / "runs" / last / "manifest.json"
    data = json.loads(manifest.read_text())
    data["versions"]["transformers"] = "0.0.1"
    manifest.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["report", str(copy), "--out", str(tmp_path / "again")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "different package versions" in line]
    assert len(warning) == 1 and "transformers" in warning[0] and f"vs 0.0.1 ({last})" in warning[0]
    assert f"vs 0.0.1 ({last})" in (tmp_path / "again" / "report.md").read_text()


def test_run_folders_hold_the_summary_and_entry_types_byte_for_byte(finished, tmp_path):
    """eval/summary.json read as an EvalSummary and written again is the same bytes; the manifest's entry is
    the ComparisonEntry the plan made, in the same keys and order as always."""
    from alignkit.runfolder import ComparisonEntry, read_run

    out, _, _ = finished
    for label in ("dpo", "ipo", "ppo", "sft"):
        folder = read_run(out / "runs" / label)
        summary = folder.summary()
        summary.write(tmp_path / label)
        written = (tmp_path / label / "eval" / "summary.json").read_bytes()
        assert written == (out / "runs" / label / "eval" / "summary.json").read_bytes()
        assert summary.is_policy and summary.gold_reward_mean == summary.by_temperature[0]["gold_reward_mean"]
        recorded = folder.manifest["compare_entry"]
        assert list(recorded) == ["label", "group", "sweep", "seed_index", "comparison"]
        assert recorded == {"label": label, "group": label, "sweep": {}, "seed_index": 0,
                            "comparison": "compare"}
        assert folder.entry == ComparisonEntry(label, label, comparison="compare")
        assert folder.entry.to_dict() == recorded
