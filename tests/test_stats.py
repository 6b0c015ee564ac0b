"""Checks for the pure statistics in ``alignkit.eval.stats`` and ``alignkit.eval.frontier``: hand numbers,
exact antisymmetry, and interval coverage on simulated binomial data with a fixed seed."""

import math

import numpy as np
import pytest

from alignkit.eval.frontier import (
    FrontierPoint,
    describe_matched_kl,
    matched_kl_difference,
    pareto_frontier,
    reward_at_kl,
)
from alignkit.eval.stats import head_to_head, mean_interval, wilson_interval

# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("p", [0.5, 0.8])
def test_wilson_interval_covers_true_rate(p):
    """2000 replications of Binomial(200, p): the 95% Wilson interval covers p about 95% of the time."""
    n, reps = 200, 2000
    wins = np.random.default_rng(1234).binomial(n, p, size=reps)
    intervals = np.array([wilson_interval(k / n, n) for k in wins])
    coverage = np.mean((intervals[:, 0] <= p) & (p <= intervals[:, 1]))
    assert 0.93 <= coverage <= 0.97, coverage


@pytest.mark.parametrize("p", [0.5, 0.8])
def test_head_to_head_paired_bootstrap_covers_true_rate(p):
    """Entry 0 beats entry 1 on each of 200 prompts with probability p (no ties): the bootstrap interval covers p."""
    n_prompts, reps = 200, 300
    outcomes = np.random.default_rng(99).random((reps, n_prompts)) < p
    covered = 0
    for r in range(reps):
        scores = np.stack([outcomes[r].astype(float), np.full(n_prompts, 0.5)])
        _, low, high = head_to_head(scores, n_boot=1000, seed=r)
        covered += low[0, 1] <= p <= high[0, 1]
    coverage = covered / reps
    assert 0.90 <= coverage <= 0.98, coverage


# --------------------------------------------------------------------------- head_to_head


def test_head_to_head_ties_count_half_by_hand():
    scores = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0]], float)
    win, low, high = head_to_head(scores, n_boot=200)
    # 0 vs 1: tie, win, loss -> 1.5/3; 0 vs 2: win, win, tie -> 2.5/3; 1 vs 2: win, tie, win -> 2.5/3
    expected = np.array([[0.5, 0.5, 2.5 / 3], [0.5, 0.5, 2.5 / 3], [0.5 / 3, 0.5 / 3, 0.5]])
    np.testing.assert_allclose(win, expected, atol=1e-15)
    assert np.all(low <= win) and np.all(win <= high)


def test_head_to_head_identical_entries_have_degenerate_interval():
    scores = np.array([[3, 1, 2, 2], [3, 1, 2, 2]], float)
    win, low, high = head_to_head(scores, n_boot=100)
    assert np.all(win == 0.5) and np.all(low == 0.5) and np.all(high == 0.5)


def test_head_to_head_antisymmetry_with_many_ties():
    scores = np.random.default_rng(0).integers(0, 3, size=(5, 50)).astype(float)
    win, low, high = head_to_head(scores, n_boot=500, seed=3)
    np.testing.assert_allclose(win + win.T, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(low + high.T, 1.0, rtol=0, atol=1e-12)
    assert np.all(np.diag(win) == 0.5) and np.all(np.diag(low) == 0.5) and np.all(np.diag(high) == 0.5)
    assert np.all(low <= win + 1e-12) and np.all(win <= high + 1e-12)


def test_quantile_is_symmetric_under_reflection():
    """Filling LOW[j, i] as 1 - HIGH[i, j] relies on the linear quantile commuting with x -> 1 - x."""
    x = np.random.default_rng(5).integers(0, 101, size=(2000, 7)) / 100.0
    np.testing.assert_allclose(np.quantile(1 - x, 0.975, axis=0), 1 - np.quantile(x, 0.025, axis=0),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.quantile(1 - x, 0.025, axis=0), 1 - np.quantile(x, 0.975, axis=0),
                               rtol=0, atol=1e-12)


def test_head_to_head_matches_naive_paired_bootstrap():
    """The bincount/matmul bootstrap equals resampling prompt indices directly with the same draws."""
    scores = np.random.default_rng(7).normal(size=(3, 40)).round(1)
    n_boot, seed = 300, 11
    _, low, high = head_to_head(scores, n_boot=n_boot, seed=seed)
    draws = np.random.default_rng(seed).integers(0, 40, size=(n_boot, 40))
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            outcome = (scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j])
            lo, hi = np.quantile(outcome[draws].mean(axis=1), [0.025, 0.975])
            assert low[i, j] == pytest.approx(lo, abs=1e-12) and high[i, j] == pytest.approx(hi, abs=1e-12)


def test_head_to_head_rejects_bad_shapes():
    with pytest.raises(ValueError):
        head_to_head(np.zeros(5))
    with pytest.raises(ValueError):
        head_to_head(np.zeros((3, 0)))
    win, low, high = head_to_head(np.zeros((1, 4)))
    assert win.shape == low.shape == high.shape == (1, 1) and win[0, 0] == 0.5


def test_head_to_head_is_fast_at_full_size():
    import time

    scores = np.random.default_rng(0).normal(size=(30, 1000))
    start = time.perf_counter()
    head_to_head(scores, n_boot=2000)
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------- mean_interval


def test_mean_interval_by_hand():
    mean, low, high = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 1.96 * math.sqrt(5 / 3) / 2  # sample sd sqrt(5/3), sem = sd / sqrt(4)
    assert mean == 2.5 and low == pytest.approx(2.5 - half, abs=1e-12) and high == pytest.approx(2.5 + half)
    mean, low, high = mean_interval([2.0, 4.0], z=1.0)  # sd sqrt(2), sem 1
    assert (mean, low, high) == pytest.approx((3.0, 2.0, 4.0))


def test_mean_interval_too_few_values():
    mean, low, high = mean_interval([5.0])
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_interval([]))


# --------------------------------------------------------------------------- frontier


def P(kl, reward, sem=0.0, label=""):
    return FrontierPoint(kl=kl, reward=reward, reward_sem=sem, label=label)


def test_pareto_frontier_by_hand():
    points = [
        P(2.0, 0.5, label="b"),
        P(1.0, 0.2, label="tied-reward"),  # not strictly above the kl=0.5 point
        P(0.5, 0.2, label="h"),
        P(3.0, 0.4, label="dominated"),
        P(float("inf"), 2.0, label="greedy"),
        P(float("nan"), 1.0, label="nan-kl"),
        P(1.0, 0.3, label="g"),
        P(4.0, 0.9, label="d"),
        P(1.5, float("nan"), label="nan-reward"),
    ]
    assert [p.label for p in pareto_frontier(points)] == ["h", "g", "b", "d"]
    assert pareto_frontier([]) == [] and pareto_frontier([P(float("inf"), 1.0)]) == []


def test_reward_at_kl_interpolates_by_hand():
    frontier = [P(0.5, 0.2, 0.02), P(1.0, 0.3, 0.04), P(2.0, 0.5, 0.04), P(4.0, 0.9, 0.08)]
    reward, sem = reward_at_kl(frontier, [0.4, 0.5, 0.75, 1.5, 3.0, 4.0, 4.1])
    np.testing.assert_allclose(reward, [np.nan, 0.2, 0.25, 0.4, 0.7, 0.9, np.nan], atol=1e-12)
    np.testing.assert_allclose(sem, [np.nan, 0.02, 0.03, 0.04, 0.06, 0.08, np.nan], atol=1e-12)


def test_reward_at_kl_single_point_and_unsorted():
    reward, sem = reward_at_kl([P(2.0, 0.7, 0.1)], [1.9, 2.0, 2.1])
    np.testing.assert_allclose(reward, [np.nan, 0.7, np.nan])
    np.testing.assert_allclose(sem, [np.nan, 0.1, np.nan])
    assert np.all(np.isnan(reward_at_kl([], [1.0])[0]))
    with pytest.raises(ValueError):
        reward_at_kl([P(2.0, 0.5), P(1.0, 0.6)], [1.5])


def test_matched_kl_difference_parallel_lines():
    kls, rewards = [1.0, 2.0, 3.0, 5.0], [0.1, 0.4, 0.6, 0.7]
    a = [P(k, r, 0.03) for k, r in zip(kls, rewards)] + [P(0.5, 0.05, 0.03)]
    b = [P(k, r - 0.1, 0.04) for k, r in zip(kls, rewards)] + [P(8.0, 0.75, 0.04)]
    result = matched_kl_difference(a, b, n_grid=40)
    assert result["kl_low"] == 1.0 and result["kl_high"] == 5.0 and result["n_grid"] == 40
    assert result["difference"] == pytest.approx(0.1, abs=1e-12)
    # se = sqrt(0.03² + 0.04²) = 0.05 at every grid point
    assert result["ci_low"] == pytest.approx(0.1 - 1.96 * 0.05, abs=1e-12)
    assert result["ci_high"] == pytest.approx(0.1 + 1.96 * 0.05, abs=1e-12)
    assert describe_matched_kl("dpo", "ppo", result) == (
        "At matched KL (1\u20135 nats), dpo reaches a higher gold reward than ppo by 0.100 "
        "(95% interval 0.002 to 0.198).")
    # the same comparison from b's side reads the same way round
    assert describe_matched_kl("ppo", "dpo", matched_kl_difference(b, a, n_grid=40)) == describe_matched_kl(
        "dpo", "ppo", result)


def test_matched_kl_difference_single_kl_overlap_and_none():
    result = matched_kl_difference([P(1.0, 0.2, 0.01), P(2.0, 0.4, 0.01)], [P(2.0, 0.1, 0.01), P(3.0, 0.5, 0.01)])
    assert result["n_grid"] == 1 and result["kl_low"] == result["kl_high"] == 2.0
    assert result["difference"] == pytest.approx(0.3)
    assert matched_kl_difference([P(1.0, 0.2), P(2.0, 0.4)], [P(3.0, 0.1), P(4.0, 0.5)]) is None
    assert matched_kl_difference([P(float("inf"), 0.2)], [P(1.0, 0.1)]) is None
    assert matched_kl_difference([], [P(1.0, 0.1)]) is None


def test_describe_matched_kl_wording():
    higher = {"difference": 0.041, "ci_low": 0.012, "ci_high": 0.070, "kl_low": 2.1, "kl_high": 7.9, "n_grid": 50}
    assert describe_matched_kl("dpo", "ppo", higher) == (
        "At matched KL (2.1\u20137.9 nats), dpo reaches a higher gold reward than ppo by 0.041 "
        "(95% interval 0.012 to 0.070).")
    same = {"difference": 0.004, "ci_low": -0.020, "ci_high": 0.028, "kl_low": 2.1, "kl_high": 7.9, "n_grid": 50}
    assert describe_matched_kl("dpo", "ppo", same) == (
        "At matched KL (2.1\u20137.9 nats), dpo and ppo are indistinguishable: difference 0.004 "
        "(95% interval -0.020 to 0.028).")
    lower = {"difference": -0.05, "ci_low": -0.08, "ci_high": -0.02, "kl_low": 3.0, "kl_high": 3.0, "n_grid": 1}
    assert describe_matched_kl("dpo", "ppo", lower) == (
        "At matched KL (3 nats), ppo reaches a higher gold reward than dpo by 0.050 (95% interval 0.020 to 0.080).")
    none = describe_matched_kl("dpo", "ppo", None)
    assert "dpo" in none and "ppo" in none and "do not overlap" in none
