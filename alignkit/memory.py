"""Peak memory of a stretch of work (a pipeline stage): resident set size sampled by a background thread,
and CUDA's own peak-allocation counter when a GPU is in use. ``ru_maxrss`` only ever grows over the
process, so it cannot say which stage needed the memory; this can."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def current_rss_mb() -> float | None:
    """This process's resident set size now (Linux), None where /proc is unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.as_dict()``: the highest RSS seen while the block ran
    (sampled every ``interval_s``, so a spike shorter than that can be missed), and CUDA's peak allocation
    within the block."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.rss_mb = current_rss_mb() or 0.0
        self.cuda_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.rss_mb = max(self.rss_mb, current_rss_mb() or 0.0)

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if current_rss_mb() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.rss_mb = max(self.rss_mb, current_rss_mb() or 0.0)
        if torch.cuda.is_available():
            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20

    def as_dict(self) -> dict[str, float]:
        out = {"cpu_rss_mb": round(self.rss_mb, 1)}
        if self.cuda_mb is not None:
            out["cuda_max_allocated_mb"] = round(self.cuda_mb, 1)
        return out


def process_peak_mb() -> dict[str, float]:
    """The whole process's peak so far: max RSS (getrusage) and CUDA's peak allocation."""
    peak = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak
