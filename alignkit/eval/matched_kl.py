"""Which method reaches a higher gold reward at the same KL: the frontier as a staircase, the run as the unit.

**The frontier is a staircase.** With more KL allowed one can always keep a lower-KL policy, so a method's
frontier at KL k is at least the best gold reward of its points at KL <= k (:func:`lower_at`). It is at most
its staircase at its next measured point at or above k (:func:`next_point`). So A's frontier lies above B's at
k when A's lower step beats B's upper step there, and nothing is ever interpolated: A at (4.0 nats, 0.80)
against B at (5.5 nats, 0.75) is compared at 5.5 nats, and two single points at the same KL are compared at
it. Points within :data:`KL_MATCH` (relative) of a KL count as at that KL (KL is itself measured), and that
allowance is granted once: a lower step counts points up to k (1 + KL_MATCH), and the upper step it is
compared with starts at the first point at or above k itself, so it covers every point the lower step may use
(granting it on both sides let a lower step reach 5% past the upper one, so the upper bracket sat below 0 for
identical methods: false winners 0.038 instead of 0.031 at 3 units, run sd 0.05, benchmarks/README.md). The
comparison grid is every measured point of either method from the higher of their lowest KLs to the lower of
their highest.

**Selection is cross-fitted.** A staircase is a maximum over noisy points, and a method with more checkpoints
has more chances at a lucky one. Each step is therefore chosen on one half of the prompts (even or odd) and
read on the other, and the two readings averaged: the value read is unbiased for the point chosen, which is
never better than the best point. A run's own luck is shared by both halves, so cross-fitting cannot remove
it: a method with more runs reaching a KL gets more of it there (identical methods, run sd 0.05: the upper
bracket's mean sits 0.014 lower than at run sd 0, still at or above 0; benchmarks/README.md).

**The run is the unit.** A run's seed moves its whole trajectory, and a replicate (a re-drawn reward model,
SFT policy and pairs) moves every run of it. Each unit (a seed; a replicate when there are several, its seeds
averaged) gives its own difference from its own staircases, paired across methods (unit i of A against unit
i of B), and the interval is a t interval on those per-unit differences with k - 1 degrees of freedom
(coverage shown for 2 to 8 units in benchmarks/verdict_calibration.py). With one unit the interval covers
evaluation noise only and names no winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

KL_MATCH = 0.05  # points within 5% of a KL (relative) count as at it: KL is measured, not set


@dataclass
class Setting:
    """One point of a method (a sweep point at one checkpoint): per-prompt gold reward and KL of each unit's
    run, arrays [units, prompts] on the prompts every method was evaluated on; ``units``: their ids (seed or
    replicate), paired across methods."""

    gold: np.ndarray
    kl: np.ndarray
    label: str = ""
    units: tuple = ()

    def __post_init__(self):
        self.gold, self.kl = np.atleast_2d(np.asarray(self.gold, float)), np.atleast_2d(np.asarray(self.kl,
                                                                                                   float))
        if self.gold.shape != self.kl.shape:
            raise ValueError(f"{self.label}: gold {self.gold.shape} and kl {self.kl.shape} differ")
        self.units = tuple(self.units) or tuple(range(self.gold.shape[0]))


@dataclass
class MatchedKL:
    """Method a's lead over b at matched KL: ``difference`` (lower steps against lower steps), the interval
    [``ci_low``, ``ci_high``] (a's lower step against b's upper step, and the reverse; infinite on a side the
    points cannot bound), the per-unit numbers behind it."""

    difference: float
    ci_low: float
    ci_high: float
    grid: np.ndarray = field(repr=False)
    units: int = 1                    # paired units: 1 means evaluation noise only
    p_value: float = 1.0              # two-sided, from the t test of the side that leads
    unit_differences: list[float] | None = None
    unit_sd: float | None = None      # sd of the per-unit differences (what seeds needed is estimated from)
    unit_kind: str = "seed"

    @property
    def kl_low(self) -> float:
        return float(self.grid[0])

    @property
    def kl_high(self) -> float:
        return float(self.grid[-1])

    @property
    def covers(self) -> str:
        u = self.unit_kind
        return f"evaluation noise and {u}-to-{u} variation" if self.units > 1 else "evaluation noise only"


def _halves(gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return gold[..., 0::2].mean(axis=-1), gold[..., 1::2].mean(axis=-1)


def lower_at(pos: np.ndarray, g1: np.ndarray, g2: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """The cross-fitted staircase at each KL of ``ks`` [G] (NaN where no point is at or below it, or k is
    NaN):
    the point of highest gold on one half of the prompts among those at KL <= k, read on the other half, both
    ways averaged. ``pos`` [n]: the points' KL; ``g1``, ``g2`` [..., n]: their gold on each half."""
    eligible = pos[None, :] <= ks[:, None] * (1 + KL_MATCH)           # [G, n]; NaN k: no point
    out = []
    for choose, read in ((g1, g2), (g2, g1)):
        masked = np.where(eligible, choose[..., None, :], -np.inf)       # [..., G, n]
        pick = masked.argmax(axis=-1)
        out.append(np.take_along_axis(np.broadcast_to(read[..., None, :], masked.shape), pick[..., None],
                                      -1)[..., 0])
    value = (out[0] + out[1]) / 2
    return np.where(eligible.any(axis=1), value, np.nan)


def next_point(pos: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Each k's nearest measured KL of this method at or above it, NaN if none: no :data:`KL_MATCH` allowance
    here, since the staircase read there already counts points up to that KL (1 + KL_MATCH) (module
    docstring)."""
    above = np.where(pos[None, :] >= ks[:, None], pos[None, :], np.inf).min(axis=1)
    return np.where(np.isfinite(above), above, np.nan)


def grid_of(pos_a: np.ndarray, pos_b: np.ndarray) -> np.ndarray:
    """The measured KLs of either method from the higher lowest KL to the lower highest (at least
    the first)."""
    if not (pos_a.size and pos_b.size):
        return np.zeros(0)
    low = max(pos_a.min(), pos_b.min())
    high = max(low, min(pos_a.max(), pos_b.max()))
    points = np.unique(np.concatenate([pos_a, pos_b]))
    return points[(points >= low / (1 + KL_MATCH)) & (points <= high * (1 + KL_MATCH))]


def unit_brackets(pos_a, a1, a2, pos_b, b1, b2, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (leading axes of a1.. [..., n]): the mean over the grid of a's lower step minus b's upper step
    (how far a is surely ahead), of a's upper minus b's lower (how far a could be ahead), and of lower minus
    lower (the estimate); NaN where no grid KL bounds that side."""
    low_a, low_b = lower_at(pos_a, a1, a2, grid), lower_at(pos_b, b1, b2, grid)
    up_a = lower_at(pos_a, a1, a2, next_point(pos_a, grid))
    up_b = lower_at(pos_b, b1, b2, next_point(pos_b, grid))
    with np.errstate(all="ignore"), _quiet():
        return (np.nanmean(low_a - up_b, axis=-1), np.nanmean(up_a - low_b, axis=-1),
                np.nanmean(low_a - low_b, axis=-1))


class _quiet:
    """Silences numpy's 'mean of empty slice' (an unbounded side is NaN on purpose)."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def t_bounds(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(interval low, interval high, two-sided p) from per-unit brackets [..., k] (k >= 2): a t interval with
    k - 1 degrees of freedom on each side (lower brackets for the low end, upper for the high end); a side
    some unit cannot bound is infinite."""
    k = lo.shape[-1]
    t = stats.t.ppf(0.975, k - 1)
    with np.errstate(all="ignore"):
        se_lo = np.maximum(lo.std(axis=-1, ddof=1) / math.sqrt(k), 1e-12)
        se_hi = np.maximum(hi.std(axis=-1, ddof=1) / math.sqrt(k), 1e-12)
        low = np.where(np.isfinite(lo).all(axis=-1), lo.mean(axis=-1) - t * se_lo, -np.inf)
        high = np.where(np.isfinite(hi).all(axis=-1), hi.mean(axis=-1) + t * se_hi, np.inf)
        p_a = np.where(np.isfinite(low), 2 * stats.t.sf(lo.mean(axis=-1) / se_lo, k - 1), 1.0)
        p_b = np.where(np.isfinite(high), 2 * stats.t.cdf(hi.mean(axis=-1) / se_hi, k - 1), 1.0)
    return low, high, np.minimum(1.0, np.minimum(p_a, p_b))


def _points(settings: list[Setting], unit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled KL, gold on even prompts, gold on odd prompts) of the settings this unit has, in that order."""
    pos, g1, g2 = [], [], []
    for s in settings:
        if unit in s.units:
            row = s.units.index(unit)
            pos.append(s.kl.mean())
            h1, h2 = _halves(s.gold[row])
            g1.append(h1)
            g2.append(h2)
    return np.array(pos), np.array(g1), np.array(g2)


def paired_units(a: list[Setting], b: list[Setting]) -> list:
    """The unit ids both methods have (in order of first appearance in a)."""
    seen_b = {u for s in b for u in s.units}
    out = []
    for s in a:
        out += [u for u in s.units if u in seen_b and u not in out]
    return out


def matched_kl(a: list[Setting], b: list[Setting], *, unit_kind: str = "seed") -> MatchedKL | None:
    """Method a against method b on the staircase (module docstring); None when either has no finite point."""
    a = [s for s in a if np.isfinite(s.kl).all() and np.isfinite(s.gold).all()]
    b = [s for s in b if np.isfinite(s.kl).all() and np.isfinite(s.gold).all()]
    grid = grid_of(np.array([s.kl.mean() for s in a]), np.array([s.kl.mean() for s in b]))
    units = paired_units(a, b)
    if grid.size == 0 or not units:
        return None
    brackets = np.array([unit_brackets(*_points(a, u), *_points(b, u), grid) for u in units])  # [k, 3]
    lo, hi, est = brackets[:, 0], brackets[:, 1], brackets[:, 2]
    if len(units) == 1:  # evaluation noise only: the points' per-prompt spread, no winner named from it
        se = math.sqrt(_sem(a) ** 2 + _sem(b) ** 2)
        low = float(lo[0]) - 1.96 * se if math.isfinite(lo[0]) else -math.inf
        high = float(hi[0]) + 1.96 * se if math.isfinite(hi[0]) else math.inf
        return MatchedKL(float(est[0]), low, high, grid, 1, 1.0, None, None, unit_kind)
    low, high, p = t_bounds(lo, hi)
    sd = float(np.std(est, ddof=1)) if np.isfinite(est).all() else None
    return MatchedKL(float(np.nanmean(est)), float(low), float(high), grid, len(units), float(p),
                     [float(x) for x in est], sd, unit_kind)


def _sem(settings: list[Setting]) -> float:
    """The typical standard error of one point's gold reward (median over the points of sd
    / sqrt(prompts))."""
    return float(np.median([s.gold.std(axis=1,
                                       ddof=1).mean() / math.sqrt(s.gold.shape[1]) for s in settings]))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def seeds_needed(difference: float, sd: float | None, *, power: float = 0.8, cap: int = 1000) -> int | None:
    """Paired units a t test (5%, two-sided) needs to detect ``difference`` with ``power`` when the per-unit
    differences have sd ``sd``; None when it cannot say (no sd, or no difference)."""
    if sd is None or not math.isfinite(sd) or difference == 0 or not math.isfinite(difference):
        return None
    for k in range(2, cap + 1):
        se = max(sd, 1e-12) / math.sqrt(k)
        if stats.t.ppf(0.975, k - 1) + stats.norm.ppf(power) <= abs(difference) / se:
            return k
    return None
