"""Reading finished runs (alignkit.report.records) for the report: convergence labels from a run's trajectory,
the
frontier's points, and the refusal of runs that do not share their shared sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.summary import EvalSummary
from alignkit.report.records import RunRecord, check_shared
from alignkit.report.verdicts import convergence_of


def _point(step: int, gold: float, kl: float = 1.0, half: float = 0.02, n: int = 64) -> dict:
    return {"step": step, "n_samples": n, "gold_reward_mean": gold, "gold_reward_ci_low": gold - half,
            "gold_reward_ci_high": gold + half, "kl_mean": kl}


def _run(label: str, trajectory: list[dict], steps: int = 50, final: float = 0.7) -> RunRecord:
    summary = {"budget": {"steps": steps}, "by_temperature": [], **_point(steps, final, kl=2.0),
               "reference_gold_reward_mean": 0.3}
    return RunRecord(Path(label), {"compare_entry": {"label": label, "group": label.split("@")[0]}},
                     EvalSummary.from_dict(summary), trajectory)


def test_convergence_labels_of_runs(tmp_path):
    rising = [_point(25 * i, 0.4 + 0.05 * i, half=0.01) for i in range(1, 6)]
    flat = [_point(25 * i, 0.6 + (0.002 if i % 2 else 0), half=0.01) for i in range(1, 6)]
    assert convergence_of(_run("rising", rising))["label"] == "still improving"
    assert convergence_of(_run("flat", flat))["label"] == "converged"
    assert convergence_of(_run("one point", [_point(50, 0.6)]))["label"] == "unknown"
    assert convergence_of(_run("sampler", [], steps=0))["label"] == "no training"
    (tmp_path / "decayed").mkdir()
    (tmp_path / "decayed" / "metrics.jsonl").write_text("".join(
        f'{{"stage": "dpo", "step": {s}, "lr": {lr}}}\n' for s, lr in ((10, 0.001), (125, 0.0001))))
    # flat under a decayed schedule:
    for trajectory, label in ((rising, "budget-limited"), (flat, "converged")):
        decayed = _run(str(tmp_path / "decayed"), trajectory)                   # converged (the changed rule)
        decayed.summary.method = "dpo"
        result = convergence_of(decayed)
        assert result["label"] == label and result["lr_fraction"] == pytest.approx(0.1)


def test_runs_that_disagree_on_a_shared_section_are_refused_in_one_line():
    base = {"seed": 0, "model": {"name_or_path": "m"}, "task": {"dataset": "imdb"}, "gold_reward": "g",
            "preferences": {"n_prompts": 10}, "eval": {"n_prompts": 8}, "methods": {}}
    other = {**base, "eval": {"n_prompts": 16}}
    check_shared([("a", base, False), ("b", dict(base), False)])
    with pytest.raises(AlignkitError,
                       match="entries 'a' and 'b' disagree on shared key eval.n_prompts: 8 vs 16"):
        check_shared([("a", base, False), ("b", other, False)])


@pytest.mark.parametrize("schedule, fraction, rising_label", [
    ("linear", 0.0, "budget-limited"), ("cosine", 0.0, "budget-limited"),
    ("constant", 1.0, "still improving"), ("constant_with_warmup", 1.0, "still improving")])
def test_convergence_reads_the_learning_rate_each_schedule_recorded(tmp_path, schedule, fraction,
                                                                     rising_label):
    """The label reads the learning rate the run logged (what fit records after each step), whatever its
    schedule: one that decays to 0 ran out (a rising run is budget-limited), a constant one did not."""
    from alignkit.schedule import multiplier

    rising = [_point(25 * i, 0.4 + 0.05 * i, half=0.01) for i in range(1, 6)]
    flat = [_point(25 * i, 0.6 + (0.002 if i % 2 else 0), half=0.01) for i in range(1, 6)]
    folder = tmp_path / schedule
    folder.mkdir()
    rates = {s: 1e-3 * multiplier(s, schedule=schedule, warmup=5, total=125) for s in range(25, 126, 25)}
    (folder / "metrics.jsonl").write_text("".join(
        f'{{"stage": "dpo", "step": {s}, "lr": {lr}}}\n' for s, lr in rates.items()))
    for trajectory, label in ((rising, rising_label), (flat, "converged")):
        run = _run(str(folder), trajectory, steps=125)
        run.summary.method = "dpo"
        result = convergence_of(run)
        assert result["label"] == label and result["lr_fraction"] == pytest.approx(fraction)


def test_reward_model_settings_added_since_are_no_disagreement():
    """A run recorded before lr_schedule and warmup_ratio shares the reward model of one that has them at
    their defaults; another schedule is another reward model."""
    base = {"seed": 0, "model": {"name_or_path": "m"}, "task": {"dataset": "imdb"}, "gold_reward": "g",
            "preferences": {"n_prompts": 10}, "eval": {"n_prompts": 8}}
    older = {**base, "methods": {"reward_model": {"lr": 1e-3}}}
    today = {**base, "methods": {"reward_model": {"lr": 1e-3, "lr_schedule": "linear_to_tenth",
                                                  "warmup_ratio": 0.0}}}
    check_shared([("old", older, True), ("new", today, True)])
    today["methods"]["reward_model"]["lr_schedule"] = "cosine"
    with pytest.raises(AlignkitError, match="disagree on shared key reward_model.lr_schedule: null vs "
                                            '"cosine"'):
        check_shared([("old", older, True), ("new", today, True)])
