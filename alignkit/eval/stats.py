"""Pure statistics over logged records: win rates with confidence intervals, sequence KL summaries."""

from __future__ import annotations

import math

import numpy as np


def win_rate(scores: np.ndarray, reference_scores: np.ndarray) -> float:
    """Fraction of prompts where the policy's sample beats the reference's (ties count one half)."""
    scores, reference_scores = np.asarray(scores, float), np.asarray(reference_scores, float)
    if scores.shape != reference_scores.shape or scores.size == 0:
        raise ValueError(f"win_rate needs two equal, non-empty arrays, got {scores.shape} and "
                         f"{reference_scores.shape}")
    return float(np.mean((scores > reference_scores) + 0.5 * (scores == reference_scores)))


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion; well-behaved near 0 and 1, unlike the normal interval."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_and_sem(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, float)
    sem = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), sem


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Mean of [N] values and its normal-approximation interval mean ± z·sem (sem with ddof=1), for seed
    spreads.

    With one value there is no spread to estimate, so the interval is (nan, nan); with none, all three are
    nan.
    """
    values = np.asarray(values, float).ravel()
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = z * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def head_to_head(scores: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                 np.ndarray]:
    """Pairwise win rates W [E, E] of E entries judged on the same P prompts (scores [E, P]), with 95%
    intervals.

    W[i, j] is the fraction of prompts where entry i's score beats entry j's, ties counting one half, so the
    diagonal is 0.5. LOW, HIGH [E, E] are percentile intervals (2.5%, 97.5%) of a paired bootstrap over
    prompts: every replicate resamples one set of prompt indices shared by all pairs, keeping the pairing
    that makes head-to-head comparisons sharper than two independent win rates. Each unordered pair is
    computed once and its mirror filled in as 1 - x, so W + W.T == 1 and LOW + HIGH.T == 1 hold exactly
    (the linear-interpolation quantile is symmetric under x -> 1 - x, so nothing is lost).
    """
    scores = np.asarray(scores, float)
    if scores.ndim != 2:
        raise ValueError(f"head_to_head needs scores of shape [entries, prompts], got {scores.shape}")
    n_entries, n_prompts = scores.shape
    if n_prompts == 0:
        raise ValueError("head_to_head needs at least one prompt")
    if n_boot < 1:
        raise ValueError(f"head_to_head needs n_boot >= 1, got {n_boot}")
    win = np.full((n_entries, n_entries), 0.5)
    low, high = win.copy(), win.copy()
    rows, cols = np.triu_indices(n_entries, k=1)
    if rows.size == 0:
        return win, low, high
    # twice the per-prompt outcome, in {0, 1, 2}: integer-valued sums stay exact in float64
    outcome2 = (2.0 * (scores[rows] > scores[cols]) + (scores[rows] == scores[cols]))  # [pairs, P]
    win_ij = outcome2.sum(axis=1) / (2 * n_prompts)
    # counts[b, p] = how often prompt p was drawn in replicate b; one draw shared by every pair
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_prompts, size=(n_boot, n_prompts))
    draws += (np.arange(n_boot) * n_prompts)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n_prompts).reshape(n_boot, n_prompts)
    boot = (counts.astype(float) @ outcome2.T) / (2 * n_prompts)  # [n_boot, pairs]
    lo_ij, hi_ij = np.quantile(boot, [0.025, 0.975], axis=0)
    win[rows, cols], win[cols, rows] = win_ij, 1.0 - win_ij
    low[rows, cols], high[cols, rows] = lo_ij, 1.0 - lo_ij
    high[rows, cols], low[cols, rows] = hi_ij, 1.0 - hi_ij
    return win, low, high
