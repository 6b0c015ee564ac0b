"""Reading finished runs (alignkit.records) for the report: convergence labels from a run's trajectory, the
frontier's points, and the refusal of runs that do not share their shared sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.errors import AlignkitError
from alignkit.records import RunRecord, check_shared, converged, frontier_points


def _point(step: int, gold: float, kl: float = 1.0, half: float = 0.02, n: int = 64) -> dict:
    return {"step": step, "n_samples": n, "gold_reward_mean": gold, "gold_reward_ci_low": gold - half,
            "gold_reward_ci_high": gold + half, "kl_mean": kl}


def _run(label: str, trajectory: list[dict], steps: int = 50, final: float = 0.7) -> RunRecord:
    summary = {"budget": {"steps": steps}, "by_temperature": [], **_point(steps, final, kl=2.0)}
    return RunRecord(Path(label), {"compare_entry": {"label": label, "group": label.split("@")[0]}}, summary,
                     trajectory)


def test_convergence_labels_from_the_last_two_checkpoints():
    assert converged(_run("rising", [_point(25, 0.50), _point(50, 0.60)])) == "no"
    assert converged(_run("flat", [_point(25, 0.60), _point(50, 0.61)])) == "yes"
    assert converged(_run("one point", [_point(50, 0.6)])) == "unknown"
    assert converged(_run("sampler", [], steps=0)) == "no training"


def test_frontier_points_keep_checkpoints_on_the_full_prompt_set_only():
    run = _run("dpo@beta=0.1", [_point(25, 0.5, kl=1.0), _point(40, 0.55, kl=1.5, n=16)])
    points = frontier_points([run])["dpo"]
    assert [p.label for p in points] == ["dpo@beta=0.1", "dpo@beta=0.1@step25"]
    assert points[0].reward_sem == pytest.approx(0.02 / 1.96)


def test_runs_that_disagree_on_a_shared_section_are_refused_in_one_line():
    base = {"seed": 0, "model": {"name_or_path": "m"}, "task": {"dataset": "imdb"}, "gold_reward": "g",
            "preferences": {"n_prompts": 10}, "eval": {"n_prompts": 8}, "methods": {}}
    other = {**base, "eval": {"n_prompts": 16}}
    check_shared([("a", base, False), ("b", dict(base), False)])
    with pytest.raises(AlignkitError, match="entries 'a' and 'b' disagree on shared key eval.n_prompts: 8 vs 16"):
        check_shared([("a", base, False), ("b", other, False)])
