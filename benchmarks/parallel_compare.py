"""Figure 2 in miniature, sequential vs ``--jobs N``: the wall time of each and their ratio.

``python benchmarks/parallel_compare.py [--jobs 2] [--set KEY=VALUE ...] [--recipe compare_imdb.yaml]``
fills a fresh cache with the comparison's shared stages first (phase 1, untimed, printed), then times
``alignkit compare RECIPE`` with the default sequential phase 2 and with ``--jobs N`` into fresh folders on
that cache, alternating the order over ``--repeats``. Both give the same comparison.csv but for wall times
(checked here). On the bundled recipe this takes about 25+ minutes per side on 2 CPU cores; ``--set`` the
tiny overrides of the tests (a small model, few steps) for a check in minutes. Prints the load average: other
work on the machine reaches both sides, but not equally.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "alignkit" / "recipes" / "compare_imdb.yaml"
# wall times and memory: measured, not computed
MEASURED = ["train_wall_s", "eval_wall_s", "peak_rss_mb", "compute_wall_s"]


def compare(recipe: Path, out: Path, sets: list[str], env: dict, extra: list[str]) -> float:
    args = [sys.executable, "-m", "alignkit.cli", "compare", str(recipe), "--out", str(out), *extra]
    args += [a for s in sets for a in ("--set", s)]
    began = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"compare failed ({' '.join(extra) or 'sequential'}):\n{done.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alignkit-parallel-"))
    env = {**os.environ, "ALIGNKIT_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}; work folder {work}")
    code = ("import sys; from pathlib import Path; from alignkit.compare import plan_comparison; "
            "from alignkit.compare.shared_stages import build_shared_stages; from alignkit.runtime import "
            "start; p = plan_comparison([sys.argv[1]], overrides=sys.argv[2:]); r = p.entries[0].recipe; "
            "t = build_shared_stages([e.recipe for e in p.entries], None, start(r.device, r.precision)); "
            "import json; print(json.dumps(t)); print(round(sum(t.values()), 1))")
    began = time.perf_counter()
    shared = subprocess.run([sys.executable, "-c", code, str(args.recipe), *args.sets], env=env,
                            capture_output=True,
                            text=True, check=True).stdout.strip().splitlines()
    (work / "shared_timings.json").write_text(shared[-2] + "\n")  # each stage's seconds, for docs/scaling.md
    print(f"phase 1 stages (s): {shared[-2]}")
    shared = shared[-1]
    print(f"phase 1 (shared stages into a fresh cache, untimed below): {shared} s of stages, "
          f"{time.perf_counter() - began:.1f} s with start-up")
    walls: dict[str, list[float]] = {"sequential": [], f"--jobs {args.jobs}": []}
    tables = {}
    for r in range(args.repeats):
        order = list(walls) if r % 2 == 0 else list(walls)[::-1]
        for side in order:
            out = work / f"{side.replace(' ', '').replace('-', '')}-{r}"
            extra = [] if side == "sequential" else ["--jobs", str(args.jobs)]
            walls[side].append(compare(args.recipe, out, args.sets, env, extra))
            tables[side] = pd.read_csv(out / "comparison.csv").drop(columns=MEASURED)
            print(f"{side:<12} repeat {r}: {walls[side][-1]:.1f} s")
    same = tables["sequential"].equals(tables[f"--jobs {args.jobs}"])
    seq, par = (sum(v) / len(v) for v in walls.values())
    print(f"comparison.csv identical but for wall times and memory: {same}")
    print(f"wall time, --jobs {args.jobs} / sequential: {par / seq:.2f} ({par:.1f} s / {seq:.1f} s, mean of "
          f"{args.repeats})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
