"""Checks for the pure statistics in ``alignkit.eval.stats`` and ``alignkit.eval.frontier``: hand numbers,
exact antisymmetry, and interval coverage on simulated binomial data with a fixed seed."""

import math

import numpy as np
import pytest

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
    """Entry 0 beats entry 1 on each of 200 prompts with probability p (no ties): the bootstrap
    interval covers p."""
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
