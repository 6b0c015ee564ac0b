"""`alignkit compare --until-converged` (alignkit.compare.until_converged): entries that have not converged
are resumed
from their last training state and trained further in rounds, at a constant peak learning rate after their
first budget, keeping every checkpoint on the trajectory; one that converged stops."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_executors import MEASURED  # tests/compare/ (pytest puts this folder on sys.path)

import alignkit.compare.until_converged as until_converged
from alignkit.cli import main
from alignkit.training import make_optimizer

FAST = ["eval.every_steps=2", "eval.temperatures=[]", "eval.n_prompts=16", "dpo.max_steps=4",
        "dpo.batch_size=8",
        "dpo.warmup_steps=1", "dpo.log_every=1"]


def test_the_schedule_keeps_the_peak_rate_after_its_span():
    optimizer, scheduler = make_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1.0, total_steps=4,
                                          warmup_steps=1, tail_after=4)
    rates = []
    for _ in range(7):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.5, 1.0, 0.7, 0.4]) and rates[4:] == [1.0, 1.0, 1.0]


def test_entries_are_extended_in_rounds_from_their_last_state(tmp_path, compare_overrides, monkeypatch):
    spec = tmp_path / "cmp.yaml"
    spec.write_text("name: uc\nentries: [dpo]\nuntil_converged: {max_rounds: 3}\n")
    labels = iter(["still improving", "unknown", "converged"])  # round 0, 1, 2: the third round is never run
    monkeypatch.setattr(until_converged, "convergence_of", lambda run, test: {"label": next(labels)})
    out = tmp_path / "out"
    args = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", str(spec), "--out", str(out), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["dpo", "dpo.round1", "dpo.round2"]
    last = out / "runs" / "dpo.round2"
    manifest = json.loads((last / "manifest.json").read_text())
    assert [r["from_step"] for r in manifest["resumed"]] == [4, 8]  # resumed, never retrained from the start
    assert manifest["recipe"]["methods"]["dpo"]["max_steps"] == 12
    assert (last / "checkpoints" / "step-12").is_dir()  # the last round keeps its state; a middle one's goes
    assert not (out / "runs" / "dpo.round1" / "checkpoints").exists()
    trajectory = [json.loads(line) for line in (last / "eval" / "trajectory.jsonl").read_text().splitlines()]
    assert [p["step"] for p in trajectory] == [2, 4, 6, 8, 10, 12]  # every earlier checkpoint kept
    # the budget continues across rounds
    assert [p["budget_steps"] for p in trajectory] == [2, 4, 6, 8, 10, 12]
    # wall seconds too, each round's added to the earlier ones'
    walls = manifest["cost"]["training"]["wall_s"]
    assert [walls[str(s)] for s in (2, 4, 6, 8, 10, 12)] == sorted(walls[str(s)] for s in (2, 4, 6, 8, 10,
                                                                                           12))
    assert walls["last"] >= walls["12"]
    rounds_train = [json.loads((out / "runs" / r / "manifest.json").read_text())["timings_s"]["train dpo"]
                    for r in ("dpo", "dpo.round1", "dpo.round2")]  # each round's own training stage
    assert manifest["cost"]["train_wall_s"] == pytest.approx(sum(rounds_train), abs=0.01)  # the whole run's
    rates = {r["step"]: r["lr"] for r in map(json.loads, (last / "metrics.jsonl").read_text().splitlines())
             if r.get("stage") == "dpo" and "lr" in r}
    # the constant peak tail
    assert rates[4] < 5e-4 and all(rates[s] == pytest.approx(5e-4) for s in range(5, 13))
    index = json.loads((out / "compare.json").read_text())
    assert index["entries"][0]["run"] == "dpo.round2" and index["entries"][0]["budget"]["steps"] == 12
    rounds = json.loads((out / "until_converged.json").read_text())["rounds"]["dpo"]
    assert [r["convergence"] for r in rounds] == ["still improving", "unknown", "converged"]
    assert "## Until converged" in (out / "report.md").read_text()


def test_every_round_goes_through_the_executor(tmp_path, compare_overrides, monkeypatch):
    """With ``--jobs 2`` the extension round's runs are trained by worker processes, as round 0's are, and
    give the sequential comparison's table and rounds (all but the measured wall-time and memory columns)."""
    spec = tmp_path / "cmp.yaml"
    spec.write_text("name: uc\nentries: [dpo, ipo=dpo:loss=ipo]\nuntil_converged: {max_rounds: 1}\n")
    monkeypatch.setattr(until_converged, "convergence_of", lambda run, test: {"label": "still improving"})
    args = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
    outs = {}
    for name, extra in (("sequential", []), ("jobs", ["--jobs", "2"])):
        outs[name] = tmp_path / name
        result = CliRunner().invoke(main, ["compare", str(spec), "--out", str(outs[name]), *args, *extra],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    pids = {name: {json.loads((out / "runs" / run / "manifest.json").read_text())["pid"]
                   for run in ("dpo.round1", "ipo.round1")} for name, out in outs.items()}
    assert pids["sequential"] == {os.getpid()} and os.getpid() not in pids["jobs"] and len(pids["jobs"]) == 2
    assert sorted(p.name for p in (outs["jobs"] / "logs").iterdir()) == [
        "dpo.log", "dpo.round1.log", "ipo.log", "ipo.round1.log"]
    tables = [pd.read_csv(out / "comparison.csv").drop(columns=MEASURED) for out in outs.values()]
    assert list(tables[0]["label"]) == ["dpo", "ipo"]
    pd.testing.assert_frame_equal(*tables)
    rounds = [json.loads((out / "until_converged.json").read_text())["rounds"] for out in outs.values()]
    assert rounds[0] == rounds[1] and [r["last_step"] for r in rounds[0]["dpo"]] == [4, 8]
