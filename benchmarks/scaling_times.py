"""Per-stage times of a finished comparison, its critical path, and its predicted wall time on W workers.

``python benchmarks/scaling_times.py runs/figure2 [--workers 1,8,64]`` reads the comparison folder alignkit
wrote: ``shared/timings.json`` (phase 1: every shared stage, built once) and each run's ``manifest.json``
(``timings_s``: its stages, run in phase 2). ``--csv docs/figure2_comparison.csv`` reads a comparison.csv
instead (entry train + eval wall times only; the shared stages then count as 0 and are flagged unknown).
``--shared-timings FILE`` takes phase 1's times from FILE (``shared_timings.json`` of parallel_compare.py,
whose comparisons find their shared stages already cached).

The model (docs/scaling.md): wall(W) = shared stages + the makespan of the entries on W workers, scheduled
longest first (what ``--jobs W`` / Ray do when the longest entries come first; the real order is the
comparison's, so this is the schedule's best case). The critical path, shared stages + the longest entry, is
the floor no number of workers goes below. Times are of the machine that ran the comparison.
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path


def shared_times(folder: Path) -> dict[str, float] | None:
    path = folder / "shared" / "timings.json"
    return json.loads(path.read_text())["timings_s"] if path.is_file() else None


def entry_times(folder: Path) -> dict[str, dict[str, float]]:
    """Each run's stage timings (its manifest's ``timings_s``), in the comparison's order."""
    index = json.loads((folder / "compare.json").read_text())
    out = {}
    for entry in index["entries"]:
        manifest = json.loads((folder / "runs" / entry["run"] / "manifest.json").read_text())
        out[entry["label"]] = {k: float(v) for k, v in manifest.get("timings_s", {}).items()}
    return out


def csv_times(path: Path) -> dict[str, dict[str, float]]:
    import pandas as pd

    frame = pd.read_csv(path).drop_duplicates("label")
    return {r.label: {"train": float(r.train_wall_s or 0), "evaluate": float(r.eval_wall_s or 0)}
            for r in frame.itertuples()}


def makespan(durations: list[float], workers: int) -> float:
    """Longest-first list scheduling of ``durations`` on ``workers`` identical workers."""
    loads = [0.0] * max(1, min(workers, len(durations)))
    heapq.heapify(loads)
    for d in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + d)
    return max(loads) if durations else 0.0


def fmt(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a finished comparison folder")
    parser.add_argument("--csv", type=Path, help="a comparison.csv instead (entry train + eval times only)")
    parser.add_argument("--workers", default="1,8,64", help="worker counts to predict (GPUs, or --jobs)")
    parser.add_argument("--shared-timings", type=Path,
                        help="phase 1's stage times from elsewhere (a JSON object of "
                        "seconds by stage, as benchmarks/parallel_compare.py writes when it fills the cache "
                        "first)")
    args = parser.parse_args()
    if bool(args.folder) == bool(args.csv):
        parser.error("give a comparison folder or --csv, not both")
    shared = shared_times(args.folder) if args.folder else None
    if args.shared_timings:  # the folder's own were read from a cache filled before it ran: near zero
        shared = json.loads(args.shared_timings.read_text())
    entries = entry_times(args.folder) if args.folder else csv_times(args.csv)
    print("shared stages (phase 1, once):")
    if shared is None:
        print("  unknown: not recorded in this source (the table awaits a run with the two-phase compare)")
    for name, seconds in (shared or {}).items():
        print(f"  {name:<34} {seconds:>9.1f} s")
    shared_total = sum((shared or {}).values())
    print(f"  {'total':<34} {shared_total:>9.1f} s")
    print("entries (phase 2, each on its own worker):")
    totals = {label: sum(stages.values()) for label, stages in entries.items()}
    for label, stages in entries.items():
        train = sum(v for k, v in stages.items() if k.startswith("train"))
        evaluate = stages.get("evaluate", 0.0)
        print(f"  {label:<26} train {train:>8.1f} s  evaluate {evaluate:>7.1f} s  all stages "
              f"{totals[label]:>8.1f} s")
    longest = max(totals, key=totals.get)
    print(f"critical path: shared stages {fmt(shared_total)} + longest entry {longest} "
          f"{fmt(totals[longest])} = {fmt(shared_total + totals[longest])}")
    one = shared_total + sum(totals.values())
    for workers in (int(w) for w in args.workers.split(",")):
        wall = shared_total + makespan(list(totals.values()), workers)
        print(f"predicted wall on {workers:>3} worker(s): {fmt(wall):>10}  (speed-up {one / wall:.2f}x; "
              f"shared stages {100 * shared_total / wall:.0f}% of it)")


if __name__ == "__main__":
    main()
