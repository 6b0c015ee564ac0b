"""Numerical faults: a NaN/inf loss or gradient stops the run with one line naming stage, step and last good
checkpoint (no model saved, status failed), or is skipped and counted; every JSON written stays strict."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from reliability_helpers import PLUGIN, QUICK, RECIPES, nan_loss, strict_jsonl, strict_loads
from test_cli import assert_one_line_error

from alignkit.checkpoint import Checkpointer, NumericalError, TrainState
from alignkit.cli import main
from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe
from alignkit.runlog import MetricsLog, dumps, write_json


def test_a_nan_loss_fails_in_one_line_and_saves_nothing(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    sets = [a for o in [*tiny_overrides, *QUICK, "dpo.max_steps=6", "dpo.checkpoint_every=1",
                        "dpo.log_every=1",
                                   nan_loss()]
            for a in ("--set", o)]
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(out), "--plugins",
                                       PLUGIN,
                                       *sets], catch_exceptions=False)
    assert_one_line_error(result, "dpo: step 2: loss is nan",
                          f"last good checkpoint: {out}/checkpoints/step-1")
    assert not (out / "model").exists() and not (out / "eval" / "summary.json").exists()
    manifest = strict_loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "loss is nan" in manifest["error"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]
    assert [r["step"] for r in strict_jsonl(out / "metrics.jsonl") if r["stage"] == "dpo"] == [1]


def test_skip_nonfinite_counts_skipped_steps_and_finishes(tmp_path, tiny_overrides):
    recipe = load_recipe(RECIPES / "dpo_imdb.yaml", [*tiny_overrides, *QUICK, nan_loss(), "dpo.max_steps=5",
                                                     "dpo.log_every=1", "dpo.skip_nonfinite=true"], [PLUGIN])
    summary = run_recipe(recipe, tmp_path / "run")
    assert summary.budget["nonfinite_skipped"] == 2 and summary.budget["steps"] == 3
    records = [r for r in strict_jsonl(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "dpo"]
    assert [r.get("nonfinite_skipped", 0) for r in records] == [0, 1, 2, 2, 2]
    assert ["loss" in r for r in records] == [True, False, False, True, True]  # skipped steps log no loss
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)


def test_nonfinite_weights_are_never_saved(tmp_path, tiny_overrides, monkeypatch):
    import alignkit.methods.dpo as dpo

    def poisoned_fit(ctx, params, *args, **kwargs):  # e.g. an overflowing update the loss guard never saw
        with torch.no_grad():
            next(iter(params)).fill_(math.nan)

    monkeypatch.setattr(dpo, "fit", poisoned_fit)
    recipe = load_recipe(RECIPES / "dpo_imdb.yaml", [*tiny_overrides, *QUICK, "dpo.max_steps=1"])
    with pytest.raises(NumericalError, match="dpo: step 0: trained weights are not finite"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()
    state = TrainState([torch.nn.Parameter(torch.tensor([math.inf]))], [], [])
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.claim("unit")
    with pytest.raises(NumericalError, match="unit: step 3: weights are not finite"):
        checkpointer.save(3, state)
    assert not (tmp_path / "checkpoints").exists()


def test_every_json_alignkit_writes_is_strict(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log("dpo", 1, {"loss": math.inf, "grad_norm": -math.inf, "x": math.nan, "ok": 1.5})
    assert strict_jsonl(tmp_path / "metrics.jsonl") == [{"stage": "dpo", "step": 1, "loss": None,
                                                        "grad_norm": None, "x": None, "ok": 1.5}]
    write_json(tmp_path / "a.json", {"nested": [{"v": math.inf}], "t": (1.0, math.nan)})
    assert strict_loads((tmp_path / "a.json").read_text()) == {"nested": [{"v": None}], "t": [1.0, None]}
    assert json.loads(dumps({"v": float("-inf")})) == {"v": None}
