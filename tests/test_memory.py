"""Per-stage peak memory: a block that allocates and frees a large buffer reports a peak that includes it,
and a later small block does not inherit it (which the process-wide ru_maxrss would)."""

import pytest
import torch

from alignkit.memory import PeakMemory, current_rss_mb, process_peak_mb


@pytest.mark.skipif(current_rss_mb() is None, reason="needs /proc/self/status (Linux)")
def test_peak_is_per_block():
    before = current_rss_mb()
    with PeakMemory(interval_s=0.005) as big:
        buffer = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched
        import time
        time.sleep(0.05)
        del buffer
    with PeakMemory(interval_s=0.005) as small:
        torch.ones(1024).sum()
    assert big.as_dict()["cpu_rss_mb"] > before + 200
    assert small.as_dict()["cpu_rss_mb"] < big.as_dict()["cpu_rss_mb"] - 200
    assert process_peak_mb()["cpu_max_rss_mb"] >= big.as_dict()["cpu_rss_mb"] - 1
