"""Shared by the reliability tests: recipes on the tiny fixtures, strict JSON, run-directory snapshots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "alignkit" / "recipes"
PLUGIN = str(Path(__file__).resolve().parent / "faulty_losses.py")
QUICK = ["eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=8", "dpo.batch_size=8"]


def strict_loads(line: str):
    """json.loads that rejects NaN / Infinity (what other JSON parsers do)."""
    return json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def strict_jsonl(path: Path) -> list[dict]:
    return [strict_loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, byte for byte."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()
    }


def weights(run_dir: Path) -> dict:
    out = {}
    for file in sorted((Path(run_dir) / "model").glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def summary(run_dir: Path) -> dict:
    """``eval/summary.json`` without its wall-clock costs."""
    data = strict_loads((Path(run_dir) / "eval" / "summary.json").read_text())
    data.pop("cost", None)
    return data


def nan_loss() -> str:
    """The override selecting the test plugin's loss (NaN on its 2nd and 3rd calls), its counter reset."""
    from alignkit.registry import LOSSES, load_plugins

    load_plugins([PLUGIN])
    LOSSES.get("zz_nan_loss").count = 0
    return "dpo.loss=zz_nan_loss"


def assert_same_run(a: Path, b: Path, stage: str, ignore: tuple[str, ...] = ()) -> None:
    """Same summary, bit-identical weights, the same training records of ``stage`` (but the ``ignore`` keys:
    wall-clock metrics; shared stages may log only once)."""
    assert summary(a) == summary(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    records = [[{k: v for k, v in r.items() if k not in ignore} for r in strict_jsonl(run / "metrics.jsonl")
                if r["stage"] == stage] for run in (a, b)]
    assert records[0] == records[1] and records[0]


def kill_at_checkpoint(recipe: Path, out: Path, overrides: list[str], cache_dir: Path,
                       step: int) -> tuple[list[str], dict]:
    """``alignkit run RECIPE --out OUT`` in a process of its own, SIGKILLed once ``checkpoints/step-STEP``
    is complete; returns the command and its environment, to run it again and resume."""
    command = [sys.executable, "-m", "alignkit", "run", str(recipe), "--out", str(out), "--plugins", PLUGIN,
               *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / f"step-{step}" / "COMPLETE").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return command, env
