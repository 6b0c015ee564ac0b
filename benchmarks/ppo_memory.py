"""PPO peak memory: the lean layout (LoRA policy whose adapter-off self is the reference, value head on the
policy's trunk) against the classic one (trainable policy, a frozen full copy as reference, a separate full
value model), same model, same PPO settings, measured side by side in one invocation.

The tiny builtin model is too small to show anything (the Python and torch runtime dominates), so the script
builds a random GPT-2 of ``--width``/``--layers`` (default ~40M parameters) on the builtin model's tokenizer
and runs ``alignkit run ppo_imdb`` on it as PPO-GT (``ppo.reward: gold``: no reward model, so three models in
the classic layout, not InstructGPT's four). The number compared is the ``train ppo`` stage's own peak RSS
from each run's manifest (``stage_peak_memory_mb``). Target (issue 8): lean / classic <= 0.6.

    python benchmarks/ppo_memory.py [--width 640] [--layers 8] [--steps 2] [--device cuda] [--model DIR]
                                    [--set KEY=VALUE]... [--json FILE]

On a GPU (``--device cuda``) the compared peak is the stage's CUDA peak allocation instead of its RSS.
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


def build_model(folder: Path, width: int, layers: int, tokenizer=None, positions: int = 128) -> int:
    """A random GPT-2 saved to ``folder`` with ``tokenizer`` (default: the builtin tiny model's, which builds
    that model on first use); returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from alignkit.cache import default_cache_dir
    from alignkit.models.loading import resolve_model_path
    from alignkit.registry import load_builtins
    from alignkit.runtime import Runtime

    if tokenizer is None:
        load_builtins()
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny-gpt2-imdb",
                                                                     default_cache_dir(),
                                                                     Runtime("cpu")))
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=max(1, width // 64),
                        n_positions=positions, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_layout(layout: str, model: Path, out: Path, steps: int, device: str = "auto",
               extra: tuple[str, ...] = ()) -> dict:
    """One PPO-GT run in a fresh process; the manifest's per-stage peak memory (CUDA peak allocation when
    the run was on a GPU, else RSS) and timings. ``extra``: more ``--set`` overrides (smaller task data)."""
    sets = [f"model.name_or_path={model}", f"device={device}", "ppo.reward=gold", f"ppo.steps={steps}",
            "ppo.rollout_size=16", "ppo.minibatch_size=8", "ppo.max_new_tokens=16", "eval.n_prompts=16",
            "eval.temperatures=[]", "eval.every_steps=0", *LAYOUTS[layout], *extra]
    command = [sys.executable, "-m", "alignkit", "run", "ppo_imdb", "--out", str(out),
               *(a for s in sets for a in ("--set", s))]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"ppo_memory: the {layout} run failed: {done.stderr.strip().splitlines()[-1:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stage_peak_memory_mb"]["train ppo"]
    return {"train_peak_mb": stage.get("cuda_max_allocated_mb", stage["cpu_rss_mb"]),
            "peak_kind": "cuda_max_allocated" if "cuda_max_allocated_mb" in stage else "cpu_rss",
            "memory": stage, "train_s": manifest["timings_s"]["train ppo"],
            "iterations_per_s": steps / manifest["timings_s"]["train ppo"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640, help="hidden size of the random GPT-2")
    parser.add_argument("--layers", type=int, default=8, help="transformer layers of the random GPT-2")
    parser.add_argument("--steps", type=int, default=2, help="PPO iterations per run")
    parser.add_argument("--device", default="auto", help="the runs' device: auto, cpu, cuda")
    parser.add_argument("--model", type=Path, default=None,
                        help="an already saved model folder to use instead of building one (--width/--layers "
                             "unused)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for both runs (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignkit-ppo-memory-") as tmp:
        folder = args.model or Path(tmp) / "model"
        if args.model is None:
            n = build_model(folder, args.width, args.layers)
            print(f"model: random GPT-2, {n / 1e6:.1f}M parameters ({n * 4 / 2**20:.0f} MiB in fp32)")
        results = {layout: run_layout(layout, folder, Path(tmp) / layout, args.steps, args.device,
                                      tuple(args.sets))
                   for layout in LAYOUTS}
    kind = results["lean"]["peak_kind"]
    print(f"\n{'layout':<8} {'train ppo peak MiB (' + kind + ')':>34} {'train s':>8} {'it/s':>6}")
    for layout, r in results.items():
        print(f"{layout:<8} {r['train_peak_mb']:>34.0f} {r['train_s']:>8.1f} {r['iterations_per_s']:>6.2f}")
    ratio = results["lean"]["train_peak_mb"] / results["classic"]["train_peak_mb"]
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"\nlean / classic peak memory: {ratio:.2f} (target <= {TARGET}: {verdict})")
    if args.json:
        args.json.write_text(json.dumps({"layouts": results, "lean_over_classic": ratio, "target": TARGET,
                                         "met": ratio <= TARGET}, indent=2) + "\n")


if __name__ == "__main__":
    main()
