"""A 4-point DPO beta sweep as one ``alignkit compare`` against 4 separate ``alignkit run`` processes.

    sweep:    alignkit compare dpo --sweep dpo.beta=0.05,0.1,1,5 --set ... --out DIR
    separate: alignkit run recipes/dpo_imdb.yaml --set dpo.beta=B --set ... --out DIR_B  (x 4, in turn)

Both sides get the same short settings (``--set dpo.max_steps=20 --set eval.every_steps=0`` by default; the
same ``--set`` list goes to ``compare``, so every sweep point trains exactly what its separate run trains)
and write into fresh output folders. Printed: the wall time of each side, sweep/separate (target <= 0.85),
the CPU time of each side (user + sys of the child processes: much less sensitive to other load on the
machine than wall time) and, from each run's manifest, where the time went.

Fairness: which cache state? alignkit caches shared stages on disk (``$ALIGNKIT_CACHE``, default
~/.cache/alignkit): the builtin model, the gold reward, the preference pairs, pi_ref's log-probs of the
pairs (``reference_logps``) and pi_ref's evaluation samples (``reference_samples``). The shared cache is
usually warm with all of these for the bundled recipe, which would make both sides skip every shared stage
and hide what the sweep shares. So each side runs on its own fresh cache folder, seeded with only the inputs
both need equally and that neither side should rebuild: the builtin model, the gold reward and the
preference pairs (``models/``, ``gold/``, ``preferences/``), copied from the shared cache. Nothing
else is seeded, so

* the sweep builds the reference log-probs and reference samples once and its 4 points share them (plus
  one process start, one import of torch/transformers, one SFT model load);
* each separate run gets a fresh cache of its own, so each computes the reference log-probs and samples
  itself: 4 independent runs that share nothing but the seeded inputs.

That is the sharing *within* the sweep. Separate runs on one machine normally share the disk cache too,
so runs 2-4 would load what run 1 cached: ``--shared-cache-baseline`` also times that case (4 separate
runs on one fresh seeded cache), which isolates what in-process sharing adds beyond the disk cache.
The sweep also writes the comparison report (tables, plots), which separate runs do not: counted against it.
The sweep runs between the separate runs (half before it, half after), so a drift in machine load over the
benchmark reaches both sides alike; the load average at each process start is printed.

The ratio depends on how large the shared stages are next to each run's own training and evaluation: with
short training (20 steps) the shared reference pass over all ~10,800 pairs weighs more than in a full run.

    python benchmarks/beta_sweep.py [--steps 20] [--betas 0.05,0.1,1,5] [--shared-cache-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "dpo_imdb.yaml"
SEEDED_KINDS = ("models", "gold", "preferences")  # what both sides need equally and neither should rebuild
# The package ships the default recipe's pairs and reference log-probs (seed 0), which would leave the sweep
# nothing to share: both sides run at a seed the package does not ship, so each builds its own reference pass.
SEED = 1
TARGET = 0.85


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--betas", default="0.05,0.1,1,5",
                        help="the sweep's dpo.beta values, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="dpo.max_steps of every run")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="the shared stages' seed: one the package does not ship (0 ships)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a further recipe override for every run, on both sides (repeatable)")
    parser.add_argument("--shared-cache-baseline", action="store_true",
                        help="also time the 4 separate runs sharing one fresh seeded cache")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# caches


def source_cache() -> Path:
    """The cache the seeded inputs are copied from: $ALIGNKIT_CACHE, else ~/.cache/alignkit."""
    from alignkit.cache import default_cache_dir

    return default_cache_dir()


def check_source(source: Path, seed: int) -> None:
    """Refuse to start when the pairs of the bundled recipe at ``seed`` are not cached: both sides would
    sample them."""
    from alignkit.recipe import load_recipe
    from alignkit.stages.builder import StageBuilder

    key = StageBuilder.for_recipe(load_recipe(RECIPE, [f"seed={seed}"])).keys.pairs_key()
    if not (source / "preferences" / f"{key}.jsonl").is_file():
        recipe = RECIPE.relative_to(ROOT)
        sys.exit(f"{source} lacks preferences/{key}.jsonl: run `alignkit run {recipe} --set seed={seed} "
                 f"--set dpo.max_steps=1` once to fill it")


def seeded_cache(source: Path, folder: Path) -> Path:
    """A fresh cache folder holding copies of the source cache's models, gold rewards and pairs only."""
    folder.mkdir(parents=True)
    for kind in SEEDED_KINDS:  # the shipped model and gold reward are read from the package, not cached
        if (source / kind).is_dir():
            shutil.copytree(source / kind, folder / kind)
    return folder


# --------------------------------------------------------------------------------------------------
# running the CLI


@dataclass
class Timing:
    """The wall and CPU seconds of one side's processes, their run folders, and the machine's 1-minute load
    average as each one started."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    run_dirs: list[Path] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], cache: Path, log: Path, timing: Timing) -> None:
    """Run ``alignkit ARGS`` on ``cache``, adding its wall and CPU time to ``timing``; exit when it fails."""
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache)}
    timing.loads.append(os.getloadavg()[0])
    cpu, start = children_cpu(), time.perf_counter()
    with log.open("w") as sink:
        code = subprocess.run([sys.executable, "-m", "alignkit", *args], cwd=ROOT, env=env, stdout=sink,
                              stderr=subprocess.STDOUT).returncode
    timing.wall_s += time.perf_counter() - start
    timing.cpu_s += children_cpu() - cpu
    if code != 0:
        sys.exit(f"alignkit {' '.join(args)} failed (exit {code}): see {log}")


def overrides(args) -> list[str]:
    """The ``--set`` arguments every run gets, on both sides."""
    sets = [f"seed={args.seed}", f"dpo.max_steps={args.steps}", "eval.every_steps=0", *args.sets]
    return [token for item in sets for token in ("--set", item)]


def run_separate(args, betas: list[str], source: Path, folder: Path, timing: Timing, *,
                 shared: Path | None = None) -> None:
    """One ``alignkit run`` per beta, one after another, each into a fresh folder under ``folder``; each on
    a fresh seeded cache of its own, or all on the cache ``shared``."""
    folder.mkdir(parents=True, exist_ok=True)
    for beta in betas:
        cache = shared or seeded_cache(source, folder / f"cache-{beta}")
        out = folder / f"beta={beta}"
        run_cli(["run", str(RECIPE), "--set", f"dpo.beta={beta}", *overrides(args), "--out", str(out)], cache,
                folder / f"beta={beta}.log", timing)
        timing.run_dirs.append(out)


def run_sweep(args, betas: list[str], source: Path, folder: Path, timing: Timing) -> None:
    """One ``alignkit compare`` over the betas, on a fresh seeded cache."""
    cache = seeded_cache(source, folder / "cache")
    out = folder / "compare"
    run_cli(["compare", "dpo", "--sweep", f"dpo.beta={','.join(betas)}", *overrides(args), "--out", str(out)],
            cache, folder / "compare.log", timing)
    timing.run_dirs.extend(sorted((out / "runs").iterdir()))


def run_all(args, betas: list[str], source: Path, work: Path) -> dict[str, Timing]:
    """Both sides, the sweep between the separate runs (half of them before it, half after) so that a drift
    in machine load reaches both alike; then, if asked, the separate runs sharing one cache."""
    sides = {"sweep": Timing(), "separate": Timing()}
    half = len(betas) // 2
    print(f"separate runs {betas[:half]}, each on its own fresh cache ...", flush=True)
    run_separate(args, betas[:half], source, work / "separate", sides["separate"])
    print("sweep ...", flush=True)
    run_sweep(args, betas, source, work / "sweep", sides["sweep"])
    print(f"separate runs {betas[half:]}, each on its own fresh cache ...", flush=True)
    run_separate(args, betas[half:], source, work / "separate", sides["separate"])
    if args.shared_cache_baseline:
        print("separate runs sharing one fresh cache ...", flush=True)
        folder = work / "separate-shared-cache"
        sides[folder.name] = Timing()
        common = seeded_cache(source, folder / "cache")
        run_separate(args, betas, source, folder, sides[folder.name], shared=common)
    return sides


# --------------------------------------------------------------------------------------------------
# report


def run_results(run_dirs: list[Path]) -> dict[float, dict]:
    """Each run's training budget and primary results, keyed by its beta (from its manifest's recipe)."""
    results = {}
    for run_dir in run_dirs:
        beta = json.loads((run_dir / "manifest.json").read_text())["recipe"]["methods"]["dpo"]["beta"]
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        results[float(beta)] = {"budget": summary["budget"], "gold_reward_mean": summary["gold_reward_mean"],
                                "kl_mean": summary.get("kl_mean")}
    return results


def check_same_work(sides: dict[str, Timing]) -> None:
    """Every side trained each beta with the same budget (steps, sequences, tokens); also says whether the
    trained policies scored the same (they should: same seeds, data and thread count)."""
    results = {name: run_results(t.run_dirs) for name, t in sides.items()}
    first_name, first = next(iter(results.items()))
    for name, other in results.items():
        if {b: r["budget"] for b, r in other.items()} != {b: r["budget"] for b, r in first.items()}:
            sys.exit(f"{name} and {first_name} did different training work: {other} vs {first}")
    same = all(other == first for other in results.values())
    budget = next(iter(first.values()))["budget"]
    print(f"same work: betas {sorted(first)} on every side, training budget per run {budget}; gold reward "
          f"and KL of each beta {'identical' if same else 'DIFFER'} across sides")


def stage_seconds(run_dirs: list[Path]) -> dict[str, float]:
    """Each stage's seconds summed over the runs' manifests (shows where the shared stages were built)."""
    total: dict[str, float] = {}
    for run_dir in run_dirs:
        for stage, seconds in json.loads((run_dir / "manifest.json").read_text())["timings_s"].items():
            total[stage] = total.get(stage, 0.0) + seconds
    return total


def report(sides: dict[str, Timing]) -> dict:
    """Print the table, the stage breakdown and the ratio; return them for --json."""
    rows = [f"{'side':<22} {'procs':>5} {'wall s':>8} {'cpu s':>8}  load average at each start"]
    for name, t in sides.items():
        rows.append(f"{name:<22} {len(t.loads):>5} {t.wall_s:>8.1f} {t.cpu_s:>8.1f}  "
                    + " ".join(f"{x:.1f}" for x in t.loads))
    print("\n".join(rows))
    stages = {name: stage_seconds(t.run_dirs) for name, t in sides.items()}
    names = list(dict.fromkeys(s for per in stages.values() for s in per))
    print(f"\nseconds per stage, summed over each side's runs (from the manifests):\n{'stage':<18}"
          + "".join(f"{n:>24}" for n in sides))
    for stage in names:
        print(f"{stage:<18}" + "".join(f"{stages[n].get(stage, 0.0):>24.1f}" for n in sides))
    sweep, separate = sides["sweep"], sides["separate"]
    ratios = {"wall": sweep.wall_s / separate.wall_s, "cpu": sweep.cpu_s / separate.cpu_s}
    print(f"\nsweep/separate wall time {ratios['wall']:.2f}  (target <= {TARGET}: "
          f"{'met' if ratios['wall'] <= TARGET else 'NOT met'});  CPU time {ratios['cpu']:.2f}")
    if "separate-shared-cache" in sides:
        shared = sides["separate-shared-cache"]
        ratios.update(wall_vs_shared_cache=sweep.wall_s / shared.wall_s,
                      cpu_vs_shared_cache=sweep.cpu_s / shared.cpu_s)
        print(f"sweep/separate runs sharing one cache: wall {ratios['wall_vs_shared_cache']:.2f}, "
              f"CPU {ratios['cpu_vs_shared_cache']:.2f}")
    return {"sides": {n: {"wall_s": t.wall_s, "cpu_s": t.cpu_s, "loads_at_start": t.loads}
                      for n, t in sides.items()}, "stages": stages, "ratios": ratios}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    betas = [b for b in args.betas.split(",") if b]
    source = source_cache()
    check_source(source, args.seed)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignkit_beta_sweep_", dir=args.keep))
    print(f"betas {betas}, settings {' '.join(overrides(args))}; inputs seeded from {source}; "
          f"folders in {work}", flush=True)
    try:
        sides = run_all(args, betas, source, work)
        print()
        check_same_work(sides)
        summary = report(sides)
        summary.update(betas=betas, settings=overrides(args)[1::2])
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
