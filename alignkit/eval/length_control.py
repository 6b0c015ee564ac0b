"""Length-controlled win rates: how often a policy's reply would win if it were as long as the reference's.

Judges, LLMs above all, tend to prefer the longer of two replies, so a raw win rate mixes quality and
length. For each prompt i, with verdict y_i (1: the policy's reply wins, 0: the reference's, 0.5: a tie) and
length difference d_i = len(policy reply) - len(reference reply) in characters, alignkit fits the logistic
regression

    P(policy wins | prompt i) = sigmoid(theta_0 + theta_1 * tanh(d_i / s)),   s = std of d over the prompts,

by maximum likelihood (ties as half a win and half a loss; a ridge penalty ``RIDGE`` * theta_1^2 / 2 keeps
the slope finite when length separates the verdicts). The length-controlled win rate is the fitted
probability at zero length difference, sigmoid(theta_0), as AlpacaEval 2's length-controlled win rate
conditions its model's length term to zero (its model has further terms; this one has only length). The
95% interval is the percentile interval of ``N_BOOT`` bootstrap resamples of the prompts (seed 0).
With no spread in lengths (s = 0) the rate is the raw win rate.
"""

from __future__ import annotations

import numpy as np

RIDGE = 0.1
N_BOOT = 1000
MAX_THETA = 30.0  # |theta| cap: a perfect separation converges to ~1 or ~0, not to an overflow


def length_feature(lengths: np.ndarray, reference_lengths: np.ndarray) -> np.ndarray:
    """tanh(d / std(d)) of the length differences d (zeros when every difference is the same)."""
    diff = np.asarray(lengths, float) - np.asarray(reference_lengths, float)
    scale = float(diff.std())
    return np.tanh(diff / scale) if scale > 0 else np.zeros_like(diff)


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, iterations: int = 50) -> np.ndarray:
    """theta [B, 2] of the weighted logistic regression of soft labels y [n] on x [n], one fit per row of
    ``weights`` [B, n] (bootstrap counts), by damped Newton steps."""
    weights = np.atleast_2d(np.asarray(weights, float))
    theta = np.zeros((weights.shape[0], 2))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(theta[:, :1] + theta[:, 1:] * x)))
        residual, curvature = weights * (p - y), weights * p * (1 - p)
        g0, g1 = residual.sum(1), (residual * x).sum(1) + RIDGE * theta[:, 1]
        h00, h01 = curvature.sum(1) + 1e-9, (curvature * x).sum(1)
        h11 = (curvature * x * x).sum(1) + RIDGE
        det = h00 * h11 - h01 * h01
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)
        theta = np.clip(theta - np.clip(step, -5.0, 5.0), -MAX_THETA, MAX_THETA)
        if np.abs(step).max() < 1e-10:
            break
    return theta


def length_controlled(preferences: np.ndarray, lengths: np.ndarray, reference_lengths: np.ndarray,
                      n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``lc_win_rate`` with its bootstrap interval, the fitted ``lc_length_slope`` (theta_1: how much the
    judge's verdict follows length) and the mean length difference in characters."""
    y = np.asarray(preferences, float)
    n = y.size
    if n == 0:
        return {"lc_win_rate": None, "lc_win_rate_ci_low": None, "lc_win_rate_ci_high": None,
                "lc_length_slope": None, "mean_length_difference_chars": None}
    x = length_feature(lengths, reference_lengths)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    theta = fit_logistic(x, y, np.vstack([np.ones(n), counts]))
    rates = 1.0 / (1.0 + np.exp(-theta[:, 0]))
    low, high = np.quantile(rates[1:], [0.025, 0.975])
    return {"lc_win_rate": float(rates[0]), "lc_win_rate_ci_low": float(low),
            "lc_win_rate_ci_high": float(high),
            "lc_length_slope": float(theta[0, 1]),
            "mean_length_difference_chars": float(np.mean(np.asarray(lengths, float) - reference_lengths))}


def char_lengths(texts: list[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=float)
