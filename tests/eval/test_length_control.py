"""Length-controlled win rates on synthetic verdicts whose truth is known, and a pairwise judge's position
bias on a judge whose order preference is known."""

from __future__ import annotations

import numpy as np

from alignkit.eval.judges import PairwiseJudge
from alignkit.eval.length_control import length_controlled, length_feature
from alignkit.eval.stats import wilson_interval

SIMULATIONS = 200


def _simulate(rng, n, intercept, slope, shift):
    """Reference replies ~200 chars; the policy's longer by ``shift`` on average; verdicts drawn from the
    model the estimator fits, so sigmoid(intercept) is the true length-controlled win rate."""
    reference = rng.normal(200, 40, n)
    lengths = reference + rng.normal(shift, 60, n)
    p = 1 / (1 + np.exp(-(intercept + slope * length_feature(lengths, reference))))
    return (rng.random(n) < p).astype(float), lengths, reference


def test_a_length_biased_judge_of_equal_replies_gives_one_half_and_the_interval_covers_it():
    """200 simulations of 200 prompts, a judge that only likes length (true LC rate 0.5, raw rate ~0.66):
    the 95% bootstrap interval (300 resamples) covers 0.5 in a share whose Wilson interval reaches 0.95."""
    rng = np.random.default_rng(0)
    covered, raw, lc = 0, [], []
    for sim in range(SIMULATIONS):
        y, lengths, reference = _simulate(rng, 200, 0.0, 2.0, 40.0)
        found = length_controlled(y, lengths, reference, n_boot=300, seed=sim)
        covered += found["lc_win_rate_ci_low"] <= 0.5 <= found["lc_win_rate_ci_high"]
        raw.append(y.mean())
        lc.append(found["lc_win_rate"])
    low, high = wilson_interval(covered / SIMULATIONS, SIMULATIONS)
    assert low <= 0.95 <= high and covered / SIMULATIONS >= 0.88, covered
    assert np.mean(raw) > 0.62  # the raw rate is fooled by length...
    assert abs(np.mean(lc) - 0.5) < 0.02  # ...the length-controlled one is not
    assert found["lc_length_slope"] > 0.5 and found["mean_length_difference_chars"] > 0


def test_a_better_policy_keeps_its_advantage_and_no_length_effect_leaves_the_rate_alone():
    rng = np.random.default_rng(1)
    truth = 1 / (1 + np.exp(-1.0))  # 0.731
    y, lengths, reference = _simulate(rng, 4000, 1.0, 1.5, -50.0)  # shorter replies, still better
    found = length_controlled(y, lengths, reference, n_boot=200)
    assert y.mean() < truth - 0.05 and abs(found["lc_win_rate"] - truth) < 0.03
    # equal lengths everywhere: nothing to control for, the LC rate is the raw rate, ties counting half
    y = np.array([1, 0, 0.5, 1, 1, 0.5, 0, 1.0])
    same = length_controlled(y, np.full(8, 50.0), np.full(8, 30.0), n_boot=200)
    assert abs(same["lc_win_rate"] - y.mean()) < 1e-6 and same["lc_length_slope"] == 0


def test_unanimous_verdicts_stay_finite():
    found = length_controlled(np.ones(10), np.arange(10.0), np.zeros(10), n_boot=50)
    assert 0.99 < found["lc_win_rate"] <= 1.0 and found["lc_win_rate_ci_low"] > 0.9


class _FirstSlotJudge(PairwiseJudge):
    """Prefers the longer reply, except on prompts marked 'lazy', where it names whichever reply is shown
    first: its verdict flips with the order there and only there."""

    def __init__(self):
        super().__init__("first-slot", "first-slot")

    def ask(self, questions):
        return ["A" if "lazy" in p or len(a) > len(b) else "B" for p, a, b in questions]


def test_position_bias_counts_the_prompts_whose_verdict_flips_with_the_order():
    judge = _FirstSlotJudge()
    prompts = [f"p{i} lazy" if i % 4 == 0 else f"p{i}" for i in range(20)]  # 5 of 20
    out = judge.compare(prompts, ["long reply"] * 20, ["short"] * 20)
    assert judge.stats["order_disagreements"] == 5
    assert list(out) == [0.5 if i % 4 == 0 else 1.0 for i in range(20)]
