"""Mixed precision: DPO training step time and peak memory at ``precision: bf16`` (and ``fp16``) against fp32,
same model, pairs, batch and loss, measured side by side in one invocation.

The tiny builtin model is too small to show anything, so the script builds a random GPT-2 of
``--width``/``--layers`` (default ~40M parameters, as benchmarks/ppo_memory.py) and runs ``alignkit run
dpo_imdb`` on it in a fresh process per precision, sharing one cache so every run trains on the same pairs
and reference log-probs. Compared: the ``train dpo`` stage's wall time per optimiser step and its own peak
RSS (CUDA allocation on a GPU) from each manifest. bf16 pays off only where the hardware computes in it
(on CPU: AVX512-BF16 or AMX; the script says whether this one has them).

    python benchmarks/precision.py [--width 640] [--layers 8] [--steps 8] [--precisions bf16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_memory import build_model  # noqa: E402  (the same random GPT-2 builder)

ROOT = Path(__file__).resolve().parent.parent


def cpu_bf16_support() -> str:
    """Which bf16 instructions this CPU has (from /proc/cpuinfo), or 'none found'."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return ", ".join(found) or "none found"


def run_precision(precision: str, model: Path, out: Path, cache: Path, steps: int, batch: int) -> dict:
    """One DPO run in a fresh process; its train stage's seconds per step and peak memory."""
    sets = [f"model.name_or_path={model}", f"precision={precision}", f"dpo.max_steps={steps}",
            f"dpo.batch_size={batch}", "dpo.checkpoint_every=0", "preferences.n_prompts=64",
            "preferences.max_new_tokens=16", "eval.n_prompts=8", "eval.max_new_tokens=8",
            "eval.temperatures=[]",
            "eval.diversity=false"]
    command = [sys.executable, "-m", "alignkit", "run", "dpo_imdb", "--out", str(out),
               *(a for s in sets for a in ("--set", s))]
    env = {**__import__("os").environ, "ALIGNKIT_CACHE": str(cache)}
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stage_peak_memory_mb"]["train dpo"]
    return {"s_per_step": manifest["timings_s"]["train dpo"] / steps,
            "peak_mb": stage.get("cuda_max_allocated_mb", stage["cpu_rss_mb"]), "memory": stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "fp16"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignkit-precision-") as tmp:
        tmp = Path(tmp)
        n_params = build_model(tmp / "model", args.width, args.layers)
        print(f"model: random GPT-2, {n_params / 1e6:.1f}M parameters; CPU bf16 instructions: "
              f"{cpu_bf16_support()}")
        # a warm-up run builds the shared pairs and reference log-probs, so the timed runs only train
        run_precision("fp32", tmp / "model", tmp / "warmup", tmp / "cache", 1, args.batch)
        results = {p: run_precision(p, tmp / "model", tmp / p, tmp / "cache", args.steps, args.batch)
                   for p in ["fp32", *args.precisions]}
    base = results["fp32"]
    for precision, row in results.items():
        print(f"{precision:>5}: {row['s_per_step']:.3f} s/step, train-stage peak {row['peak_mb']:.0f} MB")
    for precision in args.precisions:
        row = results[precision]
        print(f"{precision}/fp32: step time {row['s_per_step'] / base['s_per_step']:.2f}, "
              f"peak memory {row['peak_mb'] / base['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
