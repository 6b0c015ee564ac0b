"""Two `alignkit run` processes at once versus one alone: the wall time of each, and concurrent/solo.

Target (issue 8): with the default thread settings each concurrent run takes at most 2.5x its solo wall time.
For comparison the old behaviour (torch's default threads, OpenMP threads spin while idle) runs the same way.
Offline, CPU only: ``python benchmarks/concurrent_runs.py`` (about 10 minutes on 2 cores; a warm-up run fills
the shared cache first and is not timed). Other busy processes on the machine distort the numbers: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "alignkit" / "recipes" / "dpo_imdb.yaml"
TARGET = 2.5

# the old CLI: no thread configuration at all (torch picks its default, OpenMP spins while idle)
_OLD_CLI = "import alignkit.cli as c; c.configure_threads = lambda requested=None: None; c.main()"
_NEW_CLI = "from alignkit.cli import main; main()"

# name -> (CLI entry point, extra arguments, description)
VARIANTS = {
    "new": (_NEW_CLI, [], "default after the change: threads = cores, idle threads spin briefly then sleep"),
    "old": (_OLD_CLI, [], "before the change: torch default threads, idle threads spin"),
    "one-thread": (_NEW_CLI, ["--threads", "1"], "--threads 1"),
}
# settings inherited from the caller's shell would blur the variants
_THREAD_ENV = ("ALIGNKIT_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
               "MKL_NUM_THREADS")


def run_args(steps: int, out: Path) -> list[str]:
    """`alignkit run` arguments for a short DPO run on the bundled IMDb recipe (training dominates: one
    evaluation temperature on 64 prompts, no checkpoint evaluations), into its own folder."""
    sets = [f"dpo.max_steps={steps}", "eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=64"]
    return ["run", str(RECIPE), *(a for s in sets for a in ("--set", s)), "--out", str(out)]


def launch(variant: str, steps: int, out: Path, log: Path) -> subprocess.Popen:
    """Start one run of ``variant`` in the background; its output goes to ``log``."""
    entry, extra, _ = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
    with log.open("w") as sink:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-c", entry, *run_args(steps, out), *extra], cwd=ROOT,
                                env=env,
                                stdout=sink, stderr=subprocess.STDOUT)


def timed(variant: str, steps: int, outs: list[Path]) -> list[dict]:
    """Start one run per folder in ``outs`` at the same moment; each one's wall time, train time
    and threads."""
    start = time.perf_counter()
    procs = [launch(variant, steps, out, out.with_suffix(".log")) for out in outs]
    ended: dict[int, float] = {}
    while len(ended) < len(procs):  # poll, so each process's own end time is taken
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.perf_counter() - start
        time.sleep(0.05)
    results = []
    for i, (proc, out) in enumerate(zip(procs, outs)):
        if proc.returncode != 0:
            sys.exit(f"run failed ({variant}): see {out.with_suffix('.log')}")
        manifest = json.loads((out / "manifest.json").read_text())
        results.append({"wall_s": ended[i], "train_s": manifest["cost"]["train_wall_s"],
                        "threads": manifest.get("threads")})
    return results


def measure(variant: str, steps: int, folder: Path) -> dict:
    """One run alone, then two identical runs launched together."""
    solo = timed(variant, steps, [folder / f"{variant}_solo"])[0]
    pair = timed(variant, steps, [folder / f"{variant}_a", folder / f"{variant}_b"])
    return {"solo": solo, "pair": pair}


def table(results: dict[str, dict]) -> str:
    """Wall (and train-stage) seconds solo and concurrent, with the concurrent/solo ratio per process."""
    rows = [f"{'variant':<11} {'threads':>7} {'solo s':>8} {'conc. A s':>10} {'conc. B s':>10} "
            f"{'ratio A':>8} {'ratio B':>8} {'train ratio A/B':>16}  target <= {TARGET}x"]
    for name, r in results.items():
        solo, (a, b) = r["solo"], r["pair"]
        ratio = [p["wall_s"] / solo["wall_s"] for p in (a, b)]
        train = [p["train_s"] / solo["train_s"] for p in (a, b)]
        verdict = "ok" if max(ratio) <= TARGET else "MISSED"
        rows.append(f"{name:<11} {solo['threads']!s:>7} {solo['wall_s']:>8.1f} {a['wall_s']:>10.1f} "
                    f"{b['wall_s']:>10.1f} {ratio[0]:>7.2f}x {ratio[1]:>7.2f}x "
                    f"{train[0]:>8.2f}x/{train[1]:.2f}x  {verdict}")
    return "\n".join(rows)


def load() -> str:
    return "load average %.2f %.2f %.2f (1/5/15 min), %d cores" % (*os.getloadavg(), os.cpu_count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="DPO optimiser steps per run (default 40)")
    parser.add_argument("--variants", default="new,old", help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    print(f"before: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="alignkit_concurrent_") as tmp:
        folder = Path(tmp)
        print("warm-up run (fills the shared cache, not timed) ...", flush=True)
        timed("new", args.steps, [folder / "warmup"])
        results = {}
        for variant in variants:
            print(f"{variant}: {VARIANTS[variant][2]} ...", flush=True)
            results[variant] = measure(variant, args.steps, folder)
    print(f"after: {load()}")
    print(f"\nalignkit run {RECIPE.name} {' '.join(run_args(args.steps, Path('OUT'))[2:])}\nwall seconds per "
          "process (train ratio: the training stage alone); concurrent = two identical runs started "
          "together\n")
    print(table(results))


if __name__ == "__main__":
    main()
