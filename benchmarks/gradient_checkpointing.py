"""Gradient checkpointing (``model.gradient_checkpointing: true``) against off, same model, same DPO steps,
measured side by side in one invocation: peak memory of the training steps and time per step.

Each setting runs in a fresh process (so one's memory cannot hide in the other's): a random ~42M-parameter
GPT-2 (``ppo_memory.py``'s ``--width 640 --layers 8``, with room for ``--length`` tokens) loaded through
alignkit's ``Policy.load`` with the option on or off, then DPO steps on random chosen/rejected sequences
(the sigmoid loss on ``sequence_logprobs``, AdamW). One warm-up step creates the gradients and optimiser
state;
the next ``--steps`` are measured. Reported per setting: the peak during the measured steps (CPU: RSS sampled
every 5 ms; CUDA: peak allocation), the part of it above the loaded model (gradients, optimiser state, which
both settings hold alike, and the activations, which checkpointing shrinks), and seconds per step.
Expected: both memory ratios below 1.0, step time above 1.0.

    python benchmarks/gradient_checkpointing.py [--width 640] [--layers 8] [--batch 8] [--length 256]
                                                [--steps 4] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure(folder: Path, on: bool, batch: int, length: int, steps: int, device: str) -> dict:
    """The child process: DPO steps on the model in ``folder`` with checkpointing ``on`` or off."""
    import torch
    import torch.nn.functional as F

    from alignkit.cache import default_cache_dir
    from alignkit.memory import PeakMemory, current_rss_mb
    from alignkit.models.config import ModelConfig
    from alignkit.models.policy import Policy
    from alignkit.models.sequences import SequenceBatch
    from alignkit.runtime import Runtime

    torch.manual_seed(0)
    cfg = ModelConfig(name_or_path=str(folder), max_length=length, gradient_checkpointing=on)
    policy = Policy.load(cfg, cache_dir=default_cache_dir(), runtime=Runtime(device))
    vocab = policy.model.config.vocab_size
    ids = torch.randint(0, vocab, (2 * batch, length))
    mask = torch.ones_like(ids)
    completion = torch.zeros_like(ids)
    completion[:, length // 4:] = 1  # a quarter prompt, three quarters completion
    data = SequenceBatch(ids, mask, completion)
    with torch.no_grad():
        reference = policy.sequence_logprobs(data)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-5)
    policy.model.train()

    def step():
        logps = policy.sequence_logprobs(data)
        margin = (logps[:batch] - reference[:batch]) - (logps[batch:] - reference[batch:])
        loss = -F.logsigmoid(0.1 * margin).mean()
        loss.backward()
        optimizer.step()
        # gradients stay allocated: the held memory is the same each step
        optimizer.zero_grad(set_to_none=False)
        return loss

    cuda = policy.device.type == "cuda"
    # before the warm-up: the loaded model alone (freed activations of a step stay in a CPU process's RSS, so
    # what is measured after a step would hide them)
    held = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mb()
    step()  # warm-up: gradients and optimiser state exist from here on (in both settings alike)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began, cpu_began = time.perf_counter(), time.process_time()
    with PeakMemory(interval_s=0.005) as peak:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / steps
    # CPU time: steadier than wall time on a shared machine
    cpu_seconds = (time.process_time() - cpu_began) / steps
    top = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak.rss_mb
    return {"gradient_checkpointing": on, "peak_mb": top, "held_mb": held, "above_held_mb": top - held,
            "s_per_step": seconds, "cpu_s_per_step": cpu_seconds,
            "kind": "cuda_max_allocated" if cuda else "cpu_rss",
            "parameters": sum(p.numel() for p in policy.model.parameters())}


def child(folder: Path, on: bool, args) -> dict:
    command = [sys.executable, __file__, "--child", str(folder), "--on" if on else "--off", "--batch",
               str(args.batch),
               "--length", str(args.length), "--steps", str(args.steps), "--device", args.device]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"gradient_checkpointing: the {'on' if on else 'off'} run failed: "
                         f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step (2x sequences)")
    parser.add_argument("--length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per setting")
    parser.add_argument("--repeats", type=int, default=2, help="off/on pairs, alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--on", dest="on", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--off", dest="on", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.on, args.batch, args.length, args.steps, args.device)))
        return
    from ppo_memory import build_model

    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="alignkit-gc-") as tmp:
        folder = Path(tmp) / "model"
        n = build_model(folder, args.width, args.layers, positions=args.length)
        print(f"model: random GPT-2, {n / 1e6:.1f}M parameters; {args.batch} pairs x {args.length} tokens "
              "per step, "
              f"{args.steps} measured steps, device {args.device}")
        runs = [child(folder, on, args) for _ in range(args.repeats) for on in (False, True)]
    print(f"\n{'checkpointing':<14} {'peak MiB':>9} {'model MiB':>9} {'above model':>11} {'s/step':>7} "
          f"{'CPU s/step':>10}")
    for r in runs:
        print(f"{'on' if r['gradient_checkpointing'] else 'off':<14} {r['peak_mb']:>9.0f} "
              f"{r['held_mb']:>9.0f} {r['above_held_mb']:>11.0f} {r['s_per_step']:>7.2f} "
              f"{r['cpu_s_per_step']:>10.2f}")

    def best(on: bool, key: str) -> float:  # the least-disturbed repeat of each side
        return min(r[key] for r in runs if r["gradient_checkpointing"] == on)

    ratios = {"peak_memory": best(True, "peak_mb") / best(False, "peak_mb"),
              "memory_above_held": best(True, "above_held_mb") / best(False, "above_held_mb"),
              "step_time": best(True, "s_per_step") / best(False, "s_per_step"),
              "step_cpu_time": best(True, "cpu_s_per_step") / best(False, "cpu_s_per_step")}
    print(f"\non / off ({runs[0]['kind']}): peak memory {ratios['peak_memory']:.2f}, peak above the loaded "
          "model "
          f"{ratios['memory_above_held']:.2f}, step time {ratios['step_time']:.2f} (wall), "
          f"{ratios['step_cpu_time']:.2f} (CPU time)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
