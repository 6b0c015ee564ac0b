"""Has a run converged? A stated test on its trajectory, free of the checkpoint interval and the reward's
units.

Over the checkpoints in the last ``window_fraction`` of the run's steps (at least 3), the gold reward's rise
is
estimated by a least-squares line (weighted by each point's standard error). Its standard error is the larger
of the model's (from those standard errors) and the residuals' (checkpoints share prompts and sampling seed,
and training noise is not in the model). The tolerance is ``tolerance`` times the gain over the reference
(scale-free: the same curve in other units, or evaluated twice as often, gets the same label). With one-sided
95% bounds (Bonferroni over ``looks`` when ``--until-converged`` looks several times), the run is

* ``declining`` when the rise's upper bound lies below 0 (it is falling: over-optimisation, or instability);
* ``still improving`` when the rise's lower bound lies above 0, ``budget-limited`` when it is still improving
  and its learning rate had decayed below ``lr_floor`` of its peak (more steps at that rate would help little:
  a longer schedule would); a flat run under a decayed schedule is converged, not budget-limited (changed
  rule:
  the default schedule decays to 0.1 of its peak, and flattening under it is what that schedule delivers);
  the fraction is of the rate the run logged, so it holds for every ``lr_schedule``: 0 at the end of trl's
  linear or cosine, 1 under a constant one, where a run still improving is never budget-limited;
* ``converged`` when the rise's upper bound lies below the tolerance;
* ``unknown`` otherwise (too few or too noisy checkpoints to tell), or without a trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from alignkit.eval.summary import GOLD_CI_HIGH, GOLD_MEAN

LABELS = ("converged", "declining", "still improving", "budget-limited", "unknown")


@dataclass(frozen=True)
class ConvergenceTest:
    """The test's settings; its defaults are what reports state."""

    window_fraction: float = 0.5   # the last half of the run's steps
    tolerance: float = 0.15        # rise over the window that still counts as flat, as a fraction of the gain
    # a learning rate below this fraction of its peak means the schedule ran out
    lr_floor: float = 0.25
    looks: int = 1                 # how many times the test is applied to one run (--until-converged: rounds)

    @property
    def z(self) -> float:
        return float(stats.norm.ppf(1 - 0.05 / self.looks))

    def describe(self) -> str:
        looks = f", Bonferroni over {self.looks} looks" if self.looks > 1 else ""
        return (f"gold-reward rise over the last {self.window_fraction:g} of the run's steps (weighted least "
                f"squares, the larger of the model's and the residuals' standard error, one-sided 95% bounds"
                f"{looks}) against {self.tolerance:g} of the gain over the reference; declining when it "
                "falls; "
                f"budget-limited when still improving with the learning rate below {self.lr_floor:g} of its "
                "peak")


def rise_over_window(steps: np.ndarray, values: np.ndarray, sems: np.ndarray) -> tuple[float, float]:
    """The fitted rise from the first to the last of these points and its standard error: weighted least
    squares
    (weights 1/sem^2; equal where a standard error is missing or 0), the larger of the model's and the
    residuals' error."""
    steps, values, sems = (np.asarray(x, float) for x in (steps, values, sems))
    weights = np.where(np.isfinite(sems) & (sems > 0), 1.0 / np.maximum(sems, 1e-12) ** 2, np.nan)
    weights = np.nan_to_num(weights, nan=np.nanmean(weights) if np.isfinite(weights).any() else 1.0)
    x = steps - np.average(steps, weights=weights)
    sxx = float(np.sum(weights * x * x))
    centre = np.average(values, weights=weights)
    slope = float(np.sum(weights * x * (values - centre))) / sxx
    span = float(steps[-1] - steps[0])
    residual = values - centre - slope * x
    scale = math.sqrt(max(1.0, float(np.sum(weights * residual ** 2)) / max(len(values) - 2, 1)))
    return slope * span, scale * span / math.sqrt(sxx)


def convergence(trajectory: list[dict], test: ConvergenceTest = ConvergenceTest(), *,
                lr_fraction: float | None = None, reference: float | None = None) -> dict:
    """The label and the numbers behind it for a trajectory of checkpoints (``step``, the gold reward's mean
    and the top of its interval); ``lr_fraction``: the learning rate at the last checkpoint over its peak;
    ``reference``: the reference policy's gold reward (the gain is measured from it; without it, from the
    trajectory's first checkpoint)."""
    points = sorted((p for p in trajectory if p.get(GOLD_MEAN) is not None), key=lambda p: p["step"])
    out = {"label": "unknown", "rise": None, "rise_ci_low": None, "rise_ci_high": None, "tolerance": None,
           "window_steps": None, "lr_fraction": lr_fraction}
    if len(points) < 3:
        return out
    last_step = points[-1]["step"]
    window = [p for p in points if p["step"] >= last_step * (1 - test.window_fraction)]
    window = window if len(window) >= 3 else points[-3:]
    steps = np.array([p["step"] for p in window], float)
    values = np.array([p[GOLD_MEAN] for p in window], float)
    sems = np.array([(p.get(GOLD_CI_HIGH, math.nan) - p[GOLD_MEAN]) / 1.96 for p in window])
    rise, se = rise_over_window(steps, values, sems)
    low, high = rise - test.z * se, rise + test.z * se
    base = reference if reference is not None else points[0][GOLD_MEAN]
    tolerance = test.tolerance * abs(float(values.mean()) - base)
    out.update(rise=rise, rise_ci_low=low, rise_ci_high=high, tolerance=tolerance,
               window_steps=[int(steps[0]), int(steps[-1])])
    if high < 0:
        out["label"] = "declining"
    elif low > 0:
        limited = lr_fraction is not None and lr_fraction < test.lr_floor
        out["label"] = "budget-limited" if limited else "still improving"
    elif high < tolerance:
        out["label"] = "converged"
    return out
