"""The compute-matched view (alignkit.report.cost) on synthetic finished runs: shared stages charged to the
methods
that needed them, FLOPs from the stated rule, seeds averaged, and which method reaches the common
target first."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.report.cost import budget_columns, curves, first_sentence, first_to_reach, run_curve

N = 1000  # the policy's parameter count in these runs


def _run(label: str, method: str, points: list[tuple[int, float, int, int]], *, keys: dict | None = None,
         rm_tokens: int = 0, timings: dict | None = None, train_pairs: int = 0, sweep: dict | None = None,
         group: str | None = None, seed: int | None = None):
    """A finished run whose checkpoints are (step, gold, train tokens, sampled tokens); the last is final."""
    from alignkit.eval.summary import EvalSummary
    from alignkit.report.records import RunRecord

    trajectory = [{"step": s, "gold_reward_mean": g, "budget_steps": s, "budget_train_tokens": t,
                   "budget_train_sequences": t // 10, "budget_generated_tokens": gen}
                  for s, g, t, gen in points[:-1]]
    step, gold, tokens, generated = points[-1]
    summary = {"method": method, "by_temperature": [], "gold_reward_mean": gold,
               "reference_gold_reward_mean": 0.3,
               "budget": {"steps": step, "train_tokens": tokens, "train_sequences": tokens // 10,
                          "generated_tokens": generated},
               "training_data": {"train_pairs": train_pairs} if train_pairs else {}}
    manifest = {"train_seed": seed, "compare_entry": {"label": label, "group": group or method,
                                                      "sweep": sweep or {}},
                "recipe": {"methods": {method: {}}}, "artifact_keys": keys or {}, "timings_s": timings or {},
                "cost": {"training": {"wall_s": {**{str(s): float(s) for s, *_ in points[:-1]},
                                                 "last": float(step)},
                                      "policy_parameters": N}},
                **({"reward_model": {"budget": {"train_tokens": rm_tokens}}} if rm_tokens else {})}
    return RunRecord(Path(label), manifest, EvalSummary.from_dict(summary), trajectory)


def test_shared_stages_are_charged_to_the_methods_that_needed_them():
    dpo = _run("dpo", "dpo", [(5, 0.5, 500, 0), (10, 0.6, 1000, 0)], keys={"reference_logps": "r1"},
               timings={"reference logps": 3.0}, train_pairs=40)
    ppo = _run("ppo", "ppo", [(5, 0.55, 200, 300), (10, 0.7, 400, 600)], keys={"reward_model": "m1"},
               rm_tokens=800, timings={"reward model": 7.0})
    ppo_cached = _run("ppo2", "ppo", [(10, 0.7, 400, 600)], keys={"reward_model": "m1"}, rm_tokens=800,
                      timings={"reward model": 0.1}, group="ppo2")
    runs = [dpo, ppo, ppo_cached]
    # DPO: 1000 trained tokens; the reference pass over 40 pairs at 10 tokens a sequence, two sequences a pair
    assert budget_columns(dpo, runs) == {"compute_trained_tokens": 1000, "compute_forward_tokens": 800,
                                         "compute_sampled_tokens": 0, "compute_wall_s": 13.0,
                                         "compute_flops": 6 * N * 1000 + 2 * N * 800}
    # PPO: policy and value model trained (2 x 400) + the reward model's 800; each sampled token generated
    # once and scored by policy, reference, value model and reward model (5 forward passes)
    columns = budget_columns(ppo, runs)
    assert columns["compute_trained_tokens"] == 2 * 400 + 800 and columns["compute_forward_tokens"] == 5 * 600
    assert columns["compute_flops"] == 6 * N * 1600 + 2 * N * 3000
    # the run that loaded the reward model from the cache is charged the time the one that built it spent
    assert budget_columns(ppo_cached, runs)["compute_wall_s"] == pytest.approx(10 + 7.0)
    curve = run_curve(dpo, runs)
    assert [p["step"] for p in curve] == [0, 5, 10]
    # the reference, after the shared stage
    assert curve[0]["flops"] == 2 * N * 800 and curve[0]["gold"] == 0.3


def test_first_to_reach_names_nothing_first_from_one_seed():
    dpo = _run("dpo", "dpo", [(5, 0.5, 500, 0), (10, 0.6, 1000, 0)])
    ppo = _run("ppo", "ppo", [(5, 0.62, 2000, 3000), (10, 0.7, 4000, 6000)])
    result = first_to_reach(curves([dpo, ppo], by_seed=True))
    assert result["target"] == pytest.approx(0.6)  # DPO's best: the highest gold both reach
    assert result["first"] == "dpo" and result["cost"]["dpo"] == pytest.approx(6 * N * 1000)
    assert result["cost"]["ppo"] == pytest.approx(6 * N * 4000 + 2 * N * 5 * 3000)
    assert result["seeds"] == 1 and not result["decided"] and result["ratio_low"] is None
    assert "inconclusive: one seed each has no interval" in first_sentence(result)
    assert first_to_reach(curves([dpo], by_seed=True)) is None


def _seeds(group: str, tokens: list[int]) -> list:
    """One DPO run per seed reaching gold 0.6 at step 10 after ``tokens[seed]`` trained tokens."""
    return [_run(f"{group}#seed{i}", "dpo", [(5, 0.5, t // 2, 0), (10, 0.6, t, 0)], seed=i, group=group)
            for i, t in enumerate(tokens)]


def test_first_to_reach_is_a_t_interval_over_paired_seeds():
    # DPO needs about half IPO's tokens in every seed: decided, the ratio's interval excludes 1
    result = first_to_reach(curves(_seeds("dpo", [1000, 1100, 900]) + _seeds("ipo", [2000, 2300, 1900]),
                                   by_seed=True))
    assert result["first"] == "dpo" and result["seeds"] == 3 and result["decided"]
    assert 1 < result["ratio_low"] < result["ratio"] < result["ratio_high"]
    assert result["ratio"] == pytest.approx((2000 * 2300 * 1900 / (1000 * 1100 * 900)) ** (1 / 3))
    assert "is reached first by dpo: ipo needs 2.07 times" in first_sentence(result)
    # the order flips from seed to seed: the same point estimate says nothing, and says what it would take
    noisy = first_to_reach(curves(_seeds("dpo", [1000, 3000, 900]) + _seeds("ipo", [2000, 1500, 1900]),
                                  by_seed=True))
    assert noisy["first"] == "dpo" and not noisy["decided"] and noisy["ratio_low"] < 1 < noisy["ratio_high"]
    assert noisy["seeds_needed"] > 3 and f"about {noisy['seeds_needed']} paired seeds" in first_sentence(
        noisy
    )


def test_seeds_of_a_setting_are_averaged_at_each_step():
    a = _run("dpo#seed0", "dpo", [(5, 0.4, 500, 0), (10, 0.6, 1000, 0)])
    b = _run("dpo#seed1", "dpo", [(5, 0.6, 500, 0), (10, 0.8, 1000, 0)])
    (key, points), = curves([a, b]).items()
    assert key == ("dpo", "") and [p["gold"] for p in points] == pytest.approx([0.3, 0.5, 0.7])
