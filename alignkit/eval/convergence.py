"""Has a run converged? A stated test on its trajectory, not a glance at its last two checkpoints.

Over the last ``window`` checkpoints, the gold reward's rise is estimated by a least-squares line (each point
weighted by its own standard error), with a 95% interval. The run is

* ``still improving`` when the whole interval of the rise lies above 0;
* ``converged`` when the whole interval lies below ``tolerance`` (it cannot be rising by more than that);
* ``budget-limited`` when it would be converged but its learning rate had decayed below ``lr_floor`` of its
  peak by the last checkpoint: it flattened because the schedule ran out, not because it arrived;
* ``unknown`` otherwise (too few or too noisy checkpoints to tell), or without a trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alignkit.eval.summary import GOLD_CI_HIGH, GOLD_MEAN

LABELS = ("converged", "still improving", "budget-limited", "unknown")


@dataclass(frozen=True)
class ConvergenceTest:
    """The test's settings; its defaults are what reports state."""

    window: int = 5            # last checkpoints the slope is fitted over
    tolerance: float = 0.05    # gold-reward rise over the window that still counts as flat
    lr_floor: float = 0.25     # a learning rate below this fraction of its peak means the schedule had run out

    def describe(self) -> str:
        return (f"gold-reward rise over the last {self.window} checkpoints (weighted least squares, 95% interval) "
                f"against a tolerance of {self.tolerance:g}; budget-limited when the learning rate was below "
                f"{self.lr_floor:g} of its peak")


def rise_over_window(steps: np.ndarray, values: np.ndarray, sems: np.ndarray) -> tuple[float, float]:
    """The fitted rise from the first to the last of these points and its standard error (weighted least
    squares, weights 1/sem^2; equal weights where a standard error is missing or 0)."""
    steps, values, sems = (np.asarray(x, float) for x in (steps, values, sems))
    weights = np.where(np.isfinite(sems) & (sems > 0), 1.0 / np.maximum(sems, 1e-12) ** 2, np.nan)
    weights = np.nan_to_num(weights, nan=np.nanmean(weights) if np.isfinite(weights).any() else 1.0)
    x = steps - np.average(steps, weights=weights)
    sxx = float(np.sum(weights * x * x))
    slope = float(np.sum(weights * x * (values - np.average(values, weights=weights)))) / sxx
    span = float(steps[-1] - steps[0])
    return slope * span, span / math.sqrt(sxx)


def convergence(trajectory: list[dict], test: ConvergenceTest = ConvergenceTest(), *,
                lr_fraction: float | None = None) -> dict:
    """The label and the numbers behind it for a trajectory of checkpoints (``step``, the gold reward's mean
    and the top of its interval); ``lr_fraction``: the learning rate at the last checkpoint over its peak."""
    points = sorted((p for p in trajectory if p.get(GOLD_MEAN) is not None), key=lambda p: p["step"])
    out = {"label": "unknown", "rise": None, "rise_ci_low": None, "rise_ci_high": None,
           "window_steps": None, "lr_fraction": lr_fraction}
    if len(points) < 3:
        return out
    last = points[-test.window:]
    steps = np.array([p["step"] for p in last], float)
    values = np.array([p[GOLD_MEAN] for p in last], float)
    sems = np.array([(p.get(GOLD_CI_HIGH, math.nan) - p[GOLD_MEAN]) / 1.96 for p in last])
    rise, se = rise_over_window(steps, values, sems)
    low, high = rise - 1.96 * se, rise + 1.96 * se
    out.update(rise=rise, rise_ci_low=low, rise_ci_high=high, window_steps=[int(steps[0]), int(steps[-1])])
    if low > 0:
        out["label"] = "still improving"
    elif high < test.tolerance:
        limited = lr_fraction is not None and lr_fraction < test.lr_floor
        out["label"] = "budget-limited" if limited else "converged"
    return out
