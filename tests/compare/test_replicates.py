"""`alignkit compare --replicates N` (alignkit.compare.replicates): each replicate re-draws the shared stages,
and the
combined report gives the replicate-to-replicate spread and one verdict per pair over every replicate."""

from __future__ import annotations

import json

from click.testing import CliRunner

from alignkit.cli import main
from alignkit.compare.replicates import main as replicates_main
from alignkit.compare.replicates import spread_rows

FAST = ["eval.every_steps=2", "eval.temperatures=[]", "eval.n_prompts=16", "dpo.max_steps=4",
        "dpo.batch_size=8"]


def test_two_replicates_redraw_the_pairs_and_write_a_combined_report(tmp_path, compare_overrides, capsys):
    out = tmp_path / "reps"
    args = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", "dpo", "--replicates", "2", "--out", str(out),
                                       *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifests = [
        json.loads((out / f"replicate-{k}" / "runs" / "dpo" / "manifest.json").read_text()) for k in (0, 1)
    ]
    assert [m["recipe"]["seed"] for m in manifests] == [0, 1000]
    keys = [m["artifact_keys"] for m in manifests]
    # other pairs, another split, another reference pass
    assert keys[0]["preferences"] != keys[1]["preferences"]
    assert keys[0]["reference_logps"] != keys[1]["reference_logps"]
    pairs = [(out / f"replicate-{k}" / "runs" / "dpo" / "eval" / "summary.json") for k in (0, 1)]
    golds = [json.loads(p.read_text())["gold_reward_mean"] for p in pairs]
    assert golds[0] != golds[1]
    report = (out / "report.md").read_text()
    assert "replicate-to-replicate" in report and "## Each replicate alone" in report
    index = json.loads((out / "replicates.json").read_text())
    dpo = next(r for r in index["spread"] if r["group"] == "dpo")
    assert dpo["replicates"] == 2 and dpo["gold_by_replicate"] == [round(g, 4) for g in golds]
    assert dpo["gold_sd"] > 0 and "dpo" in result.output and "gold sd" in result.output
    # the command that rebuilds the combined report from the finished folders prints the same table
    assert replicates_main([str(out)]) == 0
    assert "gold sd" in capsys.readouterr().out


def test_spread_of_seed_averaged_replicates():
    from pathlib import Path

    from alignkit.eval.summary import EvalSummary
    from alignkit.report.records import RunRecord

    def run(label, gold, kl):
        return RunRecord(Path(label), {"compare_entry": {"label": label, "group": "dpo"}},
                         EvalSummary(results={"gold_reward_mean": gold, "kl_mean": kl}, by_temperature=[]))

    rows = spread_rows([[run("a#seed0", 0.6, 4.0), run("a#seed1", 0.8, 6.0)], [run("a", 0.9, 7.0)]])
    assert rows == [{"group": "dpo", "sweep": "", "replicates": 2, "gold_mean": 0.8,
                     "gold_sd": rows[0]["gold_sd"],
                     "kl_mean": 6.0, "kl_sd": rows[0]["kl_sd"], "gold_by_replicate": [0.7, 0.9],
                     "kl_by_replicate": [5.0, 7.0]}]
    assert abs(rows[0]["gold_sd"] - 0.1414) < 1e-3 and abs(rows[0]["kl_sd"] - 1.4142) < 1e-3


def test_replicates_run_their_entries_on_the_executor_asked_for(tmp_path, compare_overrides, monkeypatch):
    import alignkit.compare.replicates as replicates

    seen = []
    monkeypatch.setattr(
        replicates,
        "run_replicates",
        lambda plans, out: seen.extend(plans) or {"spread": [], "matched_kl": []},
    )
    sets = [a for o in compare_overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", "dpo", "sft", "--replicates", "2", "--jobs", "2",
                                       "--out", str(tmp_path / "reps"), *sets])
    assert result.exit_code == 0, result.output
    assert [(p.executor.kind, p.executor.jobs) for p in seen] == [("local", 2), ("local", 2)]


def test_replicates_record_the_command_line_with_every_option(tmp_path, compare_overrides, monkeypatch):
    """One command line for every replicate, with the sweep, seeds and temperatures the user gave; the plan
    is complete when made (frozen: nothing fills it in later)."""
    import dataclasses

    import pytest

    import alignkit.compare.replicates as replicates

    seen = []
    monkeypatch.setattr(
        replicates,
        "run_replicates",
        lambda plans, out: seen.extend(plans) or {"spread": [], "matched_kl": []},
    )
    sets = [a for o in compare_overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", "dpo", "--replicates", "2", "--sweep", "dpo.beta=0.1,1",
                                       "--seeds", "2", "--temperatures", "0,0.5", "--overwrite",
                                       "--out", str(tmp_path / "reps"), *sets])
    assert result.exit_code == 0, result.output
    assert len(seen) == 2 and seen[0].argv == seen[1].argv
    argv = seen[0].argv
    assert argv[:3] == ["alignkit", "compare", "dpo"]
    for option in ("--sweep dpo.beta=0.1,1", "--seeds 2", "--temperatures 0,0.5", "--replicates 2",
                   "--overwrite",
                   f"--out {tmp_path / 'reps'}", f"--set {compare_overrides[0]}"):
        assert option in argv
    assert all(p.overwrite for p in seen) and [p.out.name for p in seen] == ["replicate-0", "replicate-1"]
    assert len(seen[0].entries) == 4  # two betas x two seeds
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].argv = []
