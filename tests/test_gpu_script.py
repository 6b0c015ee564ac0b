"""The prepared GPU check must not rot while no GPU is lent: ``benchmarks/gpu/run.sh --dry-run`` runs every
step
that does not need CUDA on tiny sizes (its compare step reads comparison.csv's columns, which once were
renamed
under it), and every step it does not skip must succeed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "benchmarks" / "gpu" / "run.sh").is_file(),
                    reason="no benchmarks/ in this tree")
def test_gpu_script_dry_run_passes(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "ALIGNKIT_GPU_TARGET": str(tmp_path / "packages"), "ALIGNKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True,
                          text=True, timeout=900)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    failed = {name: step.get("error") for name,
              step in results["steps"].items() if step["status"] == "failed"}
    assert failed == {}, done.stdout[-2000:]
    assert done.returncode == 0, done.stdout[-2000:]
    assert results["steps"]["compare"]["status"] == "ok"
    assert set(results["steps"]["compare"]["entries"]) == {"dpo", "ppo"}
