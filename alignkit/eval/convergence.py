"""Has a run converged? A stated test on its trajectory, free of the checkpoint interval and the reward's
units.

Over the checkpoints in the last ``window_fraction`` of the run's steps (at least 3), the gold reward's rise
is estimated by a least-squares line (weighted by each point's standard error). Its standard error is the
larger of the model's (from those standard errors) and the residuals' (checkpoints share prompts and sampling
seed, and training noise is not in the model). The tolerance is ``tolerance`` times the gain over the
reference (scale-free: the same curve in other units, or evaluated twice as often, gets the same label). With
one-sided 95% bounds on the rise (Bonferroni over ``looks`` when ``--until-converged`` looks several times),
the run is

* ``still improving`` when the lower bound lies above 0 and the upper bound reaches the tolerance (rising,
  possibly by the tolerance or more); ``budget-limited`` when it is still improving and its learning rate had
  decayed below ``lr_floor`` of its peak (more steps at that rate would help little: a longer schedule would;
  the fraction is of the rate the run logged, so it holds for every ``lr_schedule``: 0 at the end of trl's
  linear or cosine, 1 under a constant one, where a run still improving is never budget-limited);
* ``declining`` when the upper bound lies below 0 and the lower bound reaches -tolerance (falling, possibly by
  the tolerance or more: over-optimisation, or instability);
* ``converged`` otherwise when the upper bound lies below the tolerance: another window of training could not
  add the tolerance, which is what a verdict asks of a run; a change shown to lie within +-tolerance is flat
  whatever its sign (the earlier rule called such runs still improving or declining when the sign was
  significant: 5% of flat runs each by chance, and with many checkpoints any slope at all). A flat run under a
  decayed schedule is converged, not budget-limited;
* ``unknown`` otherwise (too few or too noisy checkpoints to tell), or without a trajectory.

Telling a flat run from one still rising by about the tolerance takes checkpoints: at checkpoint noise sd
0.015 and a gain of 0.3, a flat curve is converged at least 90% of the time and one rising 0.04 per window at
most 5% with 16 checkpoints in the window (30 in the run); with 12 in the run a flat curve is unknown a
fifth of the time (benchmarks/README.md).
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
    # change over the window that still counts as flat, as a fraction of the gain: below 0.13, the fraction a
    # rise of 0.04 per window is of a gain of 0.3, which must count as rising (benchmarks/README.md)
    tolerance: float = 0.12
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
                f"{looks}) against {self.tolerance:g} of the gain over the reference: still improving when "
                "it surely rises and may reach the tolerance, declining when it surely falls and may reach "
                "it, else converged when it cannot reach it; budget-limited when still improving with the "
                f"learning rate below {self.lr_floor:g} of its peak")


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
    if low > 0 and high >= tolerance:
        limited = lr_fraction is not None and lr_fraction < test.lr_floor
        out["label"] = "budget-limited" if limited else "still improving"
    elif high < 0 and low <= -tolerance:
        out["label"] = "declining"
    elif high < tolerance:
        out["label"] = "converged"
    return out
