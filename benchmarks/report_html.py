"""Size and load time of report.html for Figure 2 in miniature (26 entries x 256 prompts): a made-up
comparison of that size (tests/synthetic_report.py: the report's own tables, plots and page; random samples
of realistic length) opened from disk in headless Chromium. Targets: under 10 MB, opens in under 2 s.

Load time: navigation start to the end of the load event (``performance.timing``), and to the page's own
``report-drawn`` mark once its script has drawn every section; the median of ``--repeats`` fresh loads."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import chromium, missing, open_report  # noqa: E402
from synthetic_report import synthetic_report  # noqa: E402

MAX_MB, MAX_LOAD_S = 10.0, 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=26)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--words", type=int, default=24,
                        help="mean words a completion (the quick start's 32 tokens: about 24 words)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="keep the page here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        page = synthetic_report(folder, args.entries, args.prompts, words=args.words, judge="synthetic-judge")
        megabytes = page.stat().st_size / 1e6
        print(f"{args.entries} entries x {args.prompts} prompts, ~{args.words} words a completion: {page} "
              f"{megabytes:.2f} MB (target < {MAX_MB:g} MB), built in {time.perf_counter() - start:.1f} s")
        why = missing()
        if why:
            print(f"load time not measured: {why}")
            return 0 if megabytes < MAX_MB else 1
        loads = []
        with chromium() as session:
            for _ in range(args.repeats):
                loads.append(open_report(session, page))
                session.get("about:blank")
        load = statistics.median(t["load"] for t in loads) / 1000
        drawn = statistics.median(t["drawn"] for t in loads) / 1000
        print(f"headless Chromium, median of {args.repeats} loads: load event {load:.3f} s, drawn "
              f"{drawn:.3f} s (target < {MAX_LOAD_S:g} s); every load (ms): "
              f"{[round(t['load']) for t in loads]}; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores")
        return 0 if megabytes < MAX_MB and max(load, drawn) < MAX_LOAD_S else 1


if __name__ == "__main__":
    sys.exit(main())
