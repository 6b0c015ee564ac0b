"""Is the verdict right when it answers? Simulated comparisons whose truth is known, through the shipped rule.

Each simulated method has 4 settings whose trajectories climb an IMDb-like frontier (gold 0.45 at KL 0 rising
by 0.35 with a 3-nat scale, settings ending at 3, 5, 7 and 9 nats); method a evaluates 2 checkpoints per
setting, method b 7 (unequal counts: more chances at a lucky maximum). Every point's gold on each half of the
256 prompts has evaluation noise sd 0.035; each run (setting x unit) shifts its gold by N(0, run sd) and its
KL by 5% (log-normal); with a replicate effect each unit is a replicate whose draw N(0, sd) shifts every run
of
a method. The statistic and interval are alignkit.eval.matched_kl's; a winner is named when the interval
excludes 0 (one comparison: no Holm; every run flat, so nothing threatens it; one unit never names one).

Convergence labels (alignkit.eval.convergence) are measured on trajectories with checkpoint sd 0.015: flat,
rising 0.04 over the test's window, and rising then falling by 0.1; at 30 checkpoints (16 in the window: what
telling flat from that rise at these rates takes) and at 12 (what the label gives with fewer).

    python benchmarks/verdict_calibration.py --sims 10000
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np

from alignkit.eval.convergence import ConvergenceTest, convergence
from alignkit.eval.matched_kl import grid_of, t_bounds, unit_brackets
from alignkit.eval.verdict import LOOKS, look_alpha

ENDS = np.array([3.0, 5.0, 7.0, 9.0])  # each setting's last KL (nats)
HALF_SD = 0.035                        # evaluation noise of a point's gold on half of 256 prompts


def frontier(kl: np.ndarray) -> np.ndarray:
    return 0.45 + 0.35 * (1 - np.exp(-kl / 3.0))


def method_points(checkpoints: int) -> np.ndarray:
    """The KL of every point: each setting's checkpoints evenly along its path, flattened [settings
    x ckpts]."""
    return np.concatenate([end * np.arange(1, checkpoints + 1) / checkpoints for end in ENDS])


def brackets(rng, sims: int, units: int, run_sd: float, rep_sd: float, gap: float, ckpts=(2, 7)):
    """Per simulated comparison and unit: the (lower, upper) brackets of a against b, [S, k] each (a's
    frontier raised by ``gap``)."""
    halves = []
    for method, (n_ck, lift) in enumerate(((ckpts[0], gap), (ckpts[1], 0.0))):
        kl = method_points(n_ck)                                      # [n]
        setting = np.repeat(np.arange(ENDS.size), n_ck)
        run_kl = np.exp(rng.normal(0, 0.05, (sims, units, ENDS.size)))[..., setting]
        run_gold = rng.normal(0, run_sd, (sims, units, ENDS.size))[..., setting]
        rep = rng.normal(0, rep_sd, (sims, units, 1))
        truth = frontier(kl * run_kl) + lift + run_gold + rep           # [S, k, n]
        pos = (kl * run_kl).mean(axis=1)                               # pooled over units [S, n]
        halves.append((pos, truth + rng.normal(0, HALF_SD, truth.shape), truth + rng.normal(0, HALF_SD,
                                                                                            truth.shape)))
    lows, highs = np.empty((sims, units)), np.empty((sims, units))
    (pa, a1, a2), (pb, b1, b2) = halves
    for s in range(sims):  # the grid differs per simulation (pooled KLs); the units are vectorised
        grid = grid_of(pa[s], pb[s])
        lows[s], highs[s], _ = unit_brackets(pa[s], a1[s], a2[s], pb[s], b1[s], b2[s], grid)
    return lows, highs


def simulate(rng, sims: int, units: int, run_sd: float, rep_sd: float, gap: float, ckpts=(2, 7)):
    """Per simulated comparison: (interval low, high) of a against b (a's frontier raised by ``gap``)."""
    if units == 1:  # one unit names no winner
        return np.full(sims, -np.inf), np.full(sims, np.inf)
    low, high, _ = t_bounds(*brackets(rng, sims, units, run_sd, rep_sd, gap, ckpts))
    return low, high


def sequential(rng, sims: int, run_sd: float, gap: float, looks=LOOKS):
    """Per simulated comparison: whether ``compare --decide``'s looks (the first k units of the last look's,
    k in ``looks``, each tested at its spent share of 0.05) name a winner, whether it is a (the true leader
    when ``gap`` > 0), and the seeds at which it stopped (stops at equivalence are not simulated: they only
    end looks sooner). The grid pools the last look's KLs at every look (a negligible difference)."""
    lo, hi = brackets(rng, sims, looks[-1], run_sd, 0.0, gap)
    named, right, stop = np.zeros(sims, bool), np.zeros(sims, bool), np.full(sims, looks[-1])
    for k in looks:
        low, high, p = t_bounds(lo[:, :k], hi[:, :k])
        new = ~named & (p < look_alpha(k)) & ((low > 0) | (high < 0))
        right |= new & (low > 0)
        stop[new] = k
        named |= new
    return named, right, stop


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: np.ndarray) -> str:
    k, n = int(hits.sum()), hits.size
    low, high = wilson(k, n)
    return f"{k / n:.3f} [{low:.3f}, {high:.3f}]"


def null_table(sims: int, seed: int, units=(1, 2, 3, 5), run_sds=(0.0, 0.02, 0.05), rep_sds=(0.0, 0.02)):
    """False-winner rate of identical methods per regime: rows of (units, run sd, replicate sd, hits)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, run_sd, rep_sd in itertools.product(units, run_sds, rep_sds):
        low, high = simulate(rng, sims, k, run_sd, rep_sd, 0.0)
        rows.append((k, run_sd, rep_sd, (low > 0) | (high < 0)))
    return rows


def power_table(sims: int, seed: int, units=(3, 5, 8), gap: float = 0.05, run_sd: float = 0.02):
    rng = np.random.default_rng(seed)
    return [(k, simulate(rng, sims, k, run_sd, 0.0, gap)[0] > 0) for k in units]


def trajectory(values: np.ndarray, every: int = 25) -> list[dict]:
    return [{"step": every * (i + 1), "gold_reward_mean": float(v),
             "gold_reward_ci_high": float(v) + 1.96 * 0.015}
            for i, v in enumerate(values)]


def label_rates(sims: int, seed: int, n_points: int = 30, sd: float = 0.015, test=ConvergenceTest()):
    """Label frequencies for flat, rising (0.04 over the test's window of steps) and rise-then-fall curves of
    ``n_points`` checkpoints, 25 steps apart."""
    rng = np.random.default_rng(seed)
    x = np.arange(n_points) / (n_points - 1)
    steps = 25.0 * np.arange(1, n_points + 1)
    shapes = {"flat": 0.8 + 0 * x,
              "rising 0.04 per window": 0.7 + 0.04 * steps / (test.window_fraction * steps[-1]),
              "rise then fall (0.1)": 0.7 + np.where(x < 0.5, 0.2 * x, 0.1 - 0.2 * (x - 0.5)) + 0.1}
    out = {}
    for name, curve in shapes.items():
        labels = [convergence(trajectory(curve + rng.normal(0, sd, n_points)), test, reference=0.45)["label"]
                  for _ in range(sims)]
        out[name] = {label: np.array([x == label for x in labels]) for label in set(labels) | {"converged"}}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000, help="simulated comparisons per regime")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"identical methods, {args.sims} simulations per regime: false-winner rate [95% Wilson]")
    print("| units | run sd | replicate sd | false winners |\n|---|---|---|---|")
    for k, run_sd, rep_sd, hits in null_table(args.sims, args.seed):
        print(f"| {k} | {run_sd:g} | {rep_sd:g} | {rate(hits)} |")
    print(f"\ntrue gap 0.05, run sd 0.02, {args.sims} simulations: power [95% Wilson]")
    print("| paired seeds | power |\n|---|---|")
    for k, hits in power_table(args.sims, args.seed + 1):
        print(f"| {k} | {rate(hits)} |")
    print(f"\nsequential looks (compare --decide) at {', '.join(map(str, LOOKS))} paired seeds, "
          f"O'Brien-Fleming-type spending of 0.05, {args.sims} simulations: a winner named at any look "
          f"[95% Wilson]")
    print("| methods | run sd | winner named (identical: false) | mean seeds at stop |\n|---|---|---|---|")
    rng = np.random.default_rng(args.seed + 3)
    for gap, run_sd in ((0.0, 0.02), (0.0, 0.05), (0.05, 0.02)):
        named, right, stop = sequential(rng, args.sims, run_sd, gap)
        methods = "identical" if gap == 0 else f"gap {gap:g}"
        print(f"| {methods} | {run_sd:g} | {rate(right if gap else named)} | {stop.mean():.2f} |")
    for n_points in (30, 12):
        print(f"\nconvergence labels, {n_points} checkpoints at sd 0.015, {args.sims} simulations per curve "
              "[95% Wilson]")
        print("| curve | label | rate |\n|---|---|---|")
        for name, labels in label_rates(args.sims, args.seed + 2, n_points).items():
            for label, hits in sorted(labels.items()):
                print(f"| {name} | {label} | {rate(hits)} |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
