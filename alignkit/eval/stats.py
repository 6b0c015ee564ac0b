"""Pure statistics over logged records: win rates with confidence intervals, sequence KL summaries."""

from __future__ import annotations

import math

import numpy as np


def win_rate(scores: np.ndarray, reference_scores: np.ndarray) -> float:
    """Fraction of prompts where the policy's sample beats the reference's (ties count one half)."""
    scores, reference_scores = np.asarray(scores, float), np.asarray(reference_scores, float)
    if scores.shape != reference_scores.shape or scores.size == 0:
        raise ValueError(f"win_rate needs two equal, non-empty arrays, got {scores.shape} and {reference_scores.shape}")
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
