"""Pure functions over (KL, gold reward) points: the Pareto frontier of the DPO paper's reward-vs-KL plot,
and a comparison of two methods' frontiers at matched KL."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrontierPoint:
    """One evaluated policy: mean KL to the reference (nats) and mean gold reward, with their standard errors."""

    kl: float
    reward: float
    reward_sem: float
    kl_sem: float = 0.0
    label: str = ""


def pareto_frontier(points) -> list[FrontierPoint]:
    """Upper-left envelope, KL ascending: each kept point beats the reward of every kept point with lower-or-equal KL.

    So for any KL budget the frontier's last point within budget is the best reward reachable. Points with a
    non-finite KL or reward (greedy decoding has no KL) are dropped; of points tied in KL only the best survives.
    """
    finite = [p for p in points if math.isfinite(p.kl) and math.isfinite(p.reward)]
    finite.sort(key=lambda p: (p.kl, -p.reward))
    frontier: list[FrontierPoint] = []
    for point in finite:
        if not frontier or point.reward > frontier[-1].reward:
            frontier.append(point)
    return frontier


def reward_at_kl(frontier, kl_grid) -> tuple[np.ndarray, np.ndarray]:
    """Reward and reward_sem [G] linearly interpolated along a Pareto frontier at kl_grid [G]; NaN outside its KL range.

    A single-point frontier is defined only at its own KL; an empty one nowhere. The frontier must be sorted by
    strictly increasing KL, as pareto_frontier returns it.
    """
    kl_grid = np.asarray(kl_grid, float)
    if len(frontier) == 0:
        return np.full(kl_grid.shape, np.nan), np.full(kl_grid.shape, np.nan)
    kls = np.array([p.kl for p in frontier], float)
    if not np.all(np.isfinite(kls)) or np.any(np.diff(kls) <= 0):
        raise ValueError("reward_at_kl needs a frontier with finite, strictly increasing KL (use pareto_frontier)")
    rewards = np.array([p.reward for p in frontier], float)
    sems = np.array([p.reward_sem for p in frontier], float)
    reward = np.interp(kl_grid, kls, rewards, left=np.nan, right=np.nan)
    sem = np.interp(kl_grid, kls, sems, left=np.nan, right=np.nan)
    return reward, sem


def matched_kl_difference(points_a, points_b, n_grid: int = 50) -> dict | None:
    """Mean gold-reward gap f_a(k) - f_b(k) between two methods' Pareto frontiers over their shared KL range.

    The gap is averaged over n_grid evenly spaced KL values spanning [max(min_a, min_b), min(max_a, max_b)] (one
    value if that range is a single point); None when the ranges do not overlap or either side has no finite
    point. The 95% interval is gap ± 1.96·se with se the grid mean of sqrt(sem_a(k)² + sem_b(k)²): conservative,
    as it treats the errors at neighbouring grid points as fully correlated (they share frontier points).
    Returns {"difference", "ci_low", "ci_high", "kl_low", "kl_high", "n_grid"}.
    """
    if n_grid < 1:
        raise ValueError(f"matched_kl_difference needs n_grid >= 1, got {n_grid}")
    frontier_a, frontier_b = pareto_frontier(points_a), pareto_frontier(points_b)
    if not frontier_a or not frontier_b:
        return None
    kl_low = max(frontier_a[0].kl, frontier_b[0].kl)
    kl_high = min(frontier_a[-1].kl, frontier_b[-1].kl)
    if kl_low > kl_high:
        return None
    grid = np.linspace(kl_low, kl_high, n_grid) if kl_high > kl_low else np.array([kl_low])
    reward_a, sem_a = reward_at_kl(frontier_a, grid)
    reward_b, sem_b = reward_at_kl(frontier_b, grid)
    difference = float(np.mean(reward_a - reward_b))
    se = float(np.mean(np.sqrt(sem_a**2 + sem_b**2)))
    return {"difference": difference, "ci_low": difference - 1.96 * se, "ci_high": difference + 1.96 * se,
            "kl_low": float(kl_low), "kl_high": float(kl_high), "n_grid": int(grid.size)}


def describe_matched_kl(name_a: str, name_b: str, result: dict | None) -> str:
    """One English sentence stating a matched_kl_difference result: which method is ahead, or that neither is."""
    if result is None:
        return (f"The KL ranges of {name_a} and {name_b} do not overlap, "
                f"so no matched-KL comparison is possible.")
    kl_low, kl_high = result["kl_low"], result["kl_high"]
    span = f"{kl_low:.3g} nats" if kl_low == kl_high else f"{kl_low:.3g}\u2013{kl_high:.3g} nats"
    d, lo, hi = result["difference"], result["ci_low"], result["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (f"At matched KL ({span}), {name_a} minus {name_b} gold reward is {d:.3f} "
                f"(no interval: standard errors unavailable).")
    if lo > 0:
        return (f"At matched KL ({span}), {name_a} reaches a higher gold reward than {name_b} by {d:.3f} "
                f"(95% interval {lo:.3f} to {hi:.3f}).")
    if hi < 0:
        return (f"At matched KL ({span}), {name_b} reaches a higher gold reward than {name_a} by {-d:.3f} "
                f"(95% interval {-hi:.3f} to {-lo:.3f}).")
    return (f"At matched KL ({span}), {name_a} and {name_b} are indistinguishable: difference {d:.3f} "
            f"(95% interval {lo:.3f} to {hi:.3f}).")
