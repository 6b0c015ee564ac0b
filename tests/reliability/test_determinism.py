"""Determinism: the same recipe and seed on CPU give an identical ``eval/summary.json``, byte for byte."""

from __future__ import annotations

from pathlib import Path

from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "alignkit" / "recipes" / "dpo_imdb.yaml"


def test_same_recipe_and_seed_give_an_identical_summary(tmp_path, tiny_overrides):
    recipe = lambda: load_recipe(RECIPE, [*tiny_overrides, "device=cpu", "dpo.max_steps=6",
                                          "dpo.batch_size=8",  # noqa: E731
                                          "eval.every_steps=3", "eval.temperatures=[0.5]"])
    run_recipe(recipe(), tmp_path / "first")
    run_recipe(recipe(), tmp_path / "second")
    for name in ("summary.json", "samples.jsonl", "samples_T0.5.jsonl", "trajectory.jsonl"):
        first, second = ((tmp_path / run / "eval" / name).read_bytes() for run in ("first", "second"))
        assert first == second, name
    assert b'"kl_mean"' in (tmp_path / "first" / "eval" / "summary.json").read_bytes()
