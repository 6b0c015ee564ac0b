"""PPO peak memory: the lean layout (LoRA policy whose adapter-off self is the reference, value head on the
policy's trunk) against the classic one (trainable policy, a frozen full copy as reference, a separate full
value model), same model, same PPO settings, measured side by side in one invocation.

The tiny builtin model is too small to show anything (the Python and torch runtime dominates), so the script
builds a random GPT-2 of ``--width``/``--layers`` (default ~40M parameters) on the builtin model's tokenizer
and runs ``alignkit run ppo_imdb`` on it as PPO-GT (``ppo.reward: gold``: no reward model, so three models in
the classic layout, not InstructGPT's four). The number compared is the ``train ppo`` stage's own peak RSS
from each run's manifest (``stage_peak_memory_mb``). Target (issue 8): lean / classic <= 0.6.

    python benchmarks/ppo_memory.py [--width 640] [--layers 8] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.6
LAYOUTS = {
    "classic": ["ppo.value_model=separate", "ppo.value_init=policy"],
    "lean": ["ppo.value_model=shared", "ppo.value_init=policy", "model.lora={r: 8}"],
}


def build_model(folder: Path, width: int, layers: int) -> int:
    """A random GPT-2 with the builtin tiny model's tokenizer, saved to ``folder``; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from alignkit.cache import default_cache_dir
    from alignkit.models.loading import resolve_model_path
    from alignkit.registry import load_builtins
    from alignkit.runtime import Runtime

    load_builtins()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny-gpt2-imdb", default_cache_dir(), Runtime("cpu")))
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=max(1, width // 64),
                        n_positions=128, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_layout(layout: str, model: Path, out: Path, steps: int) -> dict:
    """One PPO-GT run in a fresh process; the manifest's per-stage peak memory and timings."""
    sets = [f"model.name_or_path={model}", "ppo.reward=gold", f"ppo.steps={steps}", "ppo.rollout_size=16",
            "ppo.minibatch_size=8", "ppo.max_new_tokens=16", "eval.n_prompts=16", "eval.temperatures=[]",
            "eval.every_steps=0", *LAYOUTS[layout]]
    command = [sys.executable, "-m", "alignkit", "run", "ppo_imdb", "--out", str(out),
               *(a for s in sets for a in ("--set", s))]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"train_peak_rss_mb": manifest["stage_peak_memory_mb"]["train ppo"]["cpu_rss_mb"],
            "train_s": manifest["timings_s"]["train ppo"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640, help="hidden size of the random GPT-2")
    parser.add_argument("--layers", type=int, default=8, help="transformer layers of the random GPT-2")
    parser.add_argument("--steps", type=int, default=2, help="PPO iterations per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignkit-ppo-memory-") as tmp:
        folder = Path(tmp) / "model"
        n = build_model(folder, args.width, args.layers)
        print(f"model: random GPT-2, {n / 1e6:.1f}M parameters ({n * 4 / 2**20:.0f} MiB in fp32)")
        results = {layout: run_layout(layout, folder, Path(tmp) / layout, args.steps) for layout in LAYOUTS}
    print(f"\n{'layout':<8} {'train ppo peak RSS MiB':>24} {'train s':>8}")
    for layout, r in results.items():
        print(f"{layout:<8} {r['train_peak_rss_mb']:>24.0f} {r['train_s']:>8.1f}")
    ratio = results["lean"]["train_peak_rss_mb"] / results["classic"]["train_peak_rss_mb"]
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"\nlean / classic peak memory: {ratio:.2f} (target <= {TARGET}: {verdict})")


if __name__ == "__main__":
    main()
