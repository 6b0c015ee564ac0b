"""Shared by the reliability tests: recipes on the tiny fixtures, strict JSON, run-directory snapshots."""

from __future__ import annotations

import json
from pathlib import Path

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
