"""PPO iterations/s, alignkit against trl 1.12's ``trl.experimental.ppo.PPOTrainer``, measured side by side in
one invocation.

Both sides train the same tiny GPT-2 policy (the builtin ``tiny-gpt2-imdb``, saved with its tokenizer to a
temporary folder), against the same reward model (a sequence classifier on that backbone, saved next to it),
with a value model initialised from that reward model (InstructGPT's layout: policy, frozen reference,
reward model, value model: four models), on the same fixed set of IMDb train prompts. Settings matched:
rollout size (prompts per iteration, sampled and scored in one batch), minibatch size (one optimiser step
per minibatch), PPO epochs, response length, sampling at temperature 1 without top-k/top-p, stop at EOS,
fixed KL coefficient with the k1 estimator, clip ranges, value-loss weight, GAE gamma and lambda, advantage
whitening, policy learning rate, fp32 on CPU, thread count and OpenMP wait policy. Not matched (each
library's own design): trl reads the policy's rollout log-probs from the sampler's scores where alignkit runs
a separate forward pass; alignkit scores the reward model on re-tokenized text and also computes its gold
reward, exact KL and entropy statistics per rollout; trl trains policy and value with one fused AdamW and no
gradient clipping, alignkit with two AdamW (each its own learning rate) and clipping; see the README.

Each side runs in its own process: alignkit's own ``PPOTrainer`` (the registered ``ppo`` method, with a
Workspace whose reward model is the saved one) under this environment, and trl under the benchmark-only
virtual environment ``benchmarks/.venv-trl112`` (trl 1.12 with this environment's torch, transformers,
accelerate and datasets versions; alignkit itself requires trl >= 1.13 and never depends on 1.12). The
script creates that environment when it is missing and prints the commands it runs.

What is timed: each PPO iteration (rollout: sampling, log-probs, reference, values, reward; then the PPO
epochs), by the side's own per-iteration hook (alignkit: the hook its loop calls after every iteration; trl:
the ``on_step_end`` callback). Model loading and trainer construction are outside the clock, and so are the
first (warm-up) iterations. The two processes run in lockstep: each waits after every iteration until the
script lets it go on, and the script alternates them (alignkit, trl, trl, alignkit, ...), so at any time only
one side computes and a change in the machine's load reaches both alike. Wall time gives iterations/s; the
CPU time (user + system, all threads) of each iteration is reported too, being far less sensitive to other
processes on the machine.

    python benchmarks/ppo_vs_trl.py [--iterations 10] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from functools import cached_property
from pathlib import Path

# before torch, transformers and tqdm are imported: offline, quiet, no progress bars on either side
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "alignkit" / "recipes" / "ppo_imdb.yaml"
HERE = Path(__file__).resolve().parent
TRL_WORKER = HERE / "_trl_ppo_worker.py"
VENV = HERE / ".venv-trl112"
TRL_SPEC = "trl==1.12.*"
# trl's own dependencies are pinned to the versions of the environment running this script, so the two sides
# differ in the trainer only, not in the torch kernels or the transformers model code they call
SHARED_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "safetensors",
                   "huggingface_hub", "numpy")
BUILTIN = "builtin:tiny-gpt2-imdb"
SIDES = ("alignkit", "trl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10, help="timed PPO iterations per run, both sides")
    parser.add_argument("--warmup-iterations", type=int, default=1,
                        help="untimed iterations at the start of every run")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per side, each a fresh pair of processes (medians reported)")
    parser.add_argument("--rollout-size", type=int, default=64, help="prompts sampled per iteration")
    parser.add_argument("--minibatch-size", type=int, default=16, help="sequences per optimiser step")
    parser.add_argument("--ppo-epochs", type=int, default=4, help="passes over each rollout")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length (tokens)")
    parser.add_argument("--prompt-pool", type=int, default=512,
                        help="fixed train prompts both sides draw from")
    parser.add_argument("--model", default=BUILTIN,
                        help="policy for both sides: builtin:ALIAS or a local folder")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads on both sides (default: the cores this process may use)")
    parser.add_argument("--omp-wait-policy", choices=("passive", "active", "unset"), default="passive",
                        help="OMP_WAIT_POLICY for both sides: passive (idle threads sleep, as in "
                             "dpo_vs_trl.py; a paused side then uses no CPU), active (they spin), unset "
                             "(OpenMP's default or the caller's)")
    parser.add_argument("--trl-python", type=Path, default=None,
                        help="python of an existing environment with trl 1.12 (default: the benchmark venv "
                             f"{VENV.relative_to(ROOT)}, created when missing)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.rollout_size % args.minibatch_size:
        parser.error("--rollout-size must be a multiple of --minibatch-size (trl splits a rollout evenly)")
    if args.iterations < 1 or args.warmup_iterations < 0 or args.repeats < 1:
        parser.error("--iterations and --repeats must be >= 1, --warmup-iterations >= 0")
    return args


# --------------------------------------------------------------------------------------------------
# the benchmark-only environment with trl 1.12


def installed_version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def venv_commands() -> list[list[str]]:
    """The commands that create ``VENV``: trl 1.12, with its shared dependencies pinned to ours."""
    python = VENV / "bin" / "python"
    pins = [f"{name}=={installed_version(name)}" for name in SHARED_PACKAGES]
    install = [str(python), "-m", "pip", "install", "--quiet", TRL_SPEC, *pins]
    constraints = ROOT / "constraints.txt"
    if constraints.is_file():
        install[5:5] = ["-c", str(constraints)]
    base = getattr(sys, "_base_executable", sys.executable)
    return [[base, "-m", "venv", str(VENV)], install]


def trl_version(python: Path) -> str | None:
    """trl's version under ``python`` (None when it has none or cannot run)."""
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('trl'))"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def trl_python(explicit: Path | None) -> Path:
    """The python that runs trl's side: ``explicit``, else the benchmark venv (created when missing)."""
    python = explicit or VENV / "bin" / "python"
    found = trl_version(python)
    if found and found.startswith("1.12."):
        return python
    if explicit:
        raise SystemExit(f"--trl-python {explicit}: needs trl 1.12, found {found or 'no trl'}")
    commands = venv_commands()
    print(f"creating the benchmark-only environment {VENV.relative_to(ROOT)} (trl 1.12; found "
          f"{found or 'none'}; one-off, about a minute and 1.5 GB; never a dependency of alignkit):")
    for command in commands:
        print("  " + shlex.join(command), flush=True)
    try:
        for command in commands:
            subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"creating {VENV} failed ({exc}). Run the commands above by hand; torch "
            f"{installed_version('torch')} must come from the same place as this environment's (here pip's "
            "find-links; elsewhere e.g. --extra-index-url https://download.pytorch.org/whl/cpu).") from exc
    found = trl_version(python)
    if not (found and found.startswith("1.12.")):
        raise SystemExit(f"{VENV}: expected trl 1.12 after installing, found {found or 'no trl'}")
    return python


# --------------------------------------------------------------------------------------------------
# shared inputs: one policy folder, one reward model folder, one prompt set, one settings dict


def build_models(folder: Path, model: str, seed: int = 0) -> tuple[Path, Path, dict]:
    """The policy (with its tokenizer) and a reward model on its backbone, saved under ``folder``.

    The reward model is ``AutoModelForSequenceClassification`` (one label) on the policy's weights with a
    fresh score head (seeded): both sides load it as their reward model, and a second copy as the value
    model (alignkit: ``ppo.value_init: reward_model``, a copy of its reward model; trl: the same folder loaded
    again)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.cache import default_cache_dir
    from alignkit.models.loading import resolve_model_path
    from alignkit.registry import load_builtins
    from alignkit.runtime import Runtime

    load_builtins()
    source = resolve_model_path(model, default_cache_dir(), Runtime("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy_dir, reward_dir = folder / "policy", folder / "reward"
    policy = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    policy.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    torch.manual_seed(seed)
    reward = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    info = {"source": model, "parameters": sum(p.numel() for p in policy.parameters()),
            "vocab": len(tokenizer), "layers": policy.config.n_layer, "width": policy.config.n_embd}
    return policy_dir, reward_dir, info


def bench_recipe(policy_dir: str, s: dict):
    """The bundled PPO recipe with the benchmark's settings (fixed KL coefficient: trl's is fixed)."""
    from alignkit.recipe import load_recipe

    return load_recipe(RECIPE, [
        f"model.name_or_path={policy_dir}", f"ppo.steps={s['warmup_iterations'] + s['iterations']}",
        f"ppo.rollout_size={s['rollout_size']}", f"ppo.minibatch_size={s['minibatch_size']}",
        f"ppo.ppo_epochs={s['ppo_epochs']}", f"ppo.max_new_tokens={s['max_new_tokens']}",
        f"ppo.prompt_pool={s['prompt_pool']}", "ppo.reward=reward_model", "ppo.value_init=reward_model",
        "ppo.value_model=separate", "ppo.target_kl=null", "ppo.checkpoint_every=0", "eval.every_steps=0"])


def settings(args, threads: int) -> dict:
    """What both sides are given: the command line, then alignkit's own PPO defaults for the rest (trl's
    worker reads the same numbers)."""
    s = {"iterations": args.iterations, "warmup_iterations": args.warmup_iterations,
         "rollout_size": args.rollout_size, "minibatch_size": args.minibatch_size,
         "ppo_epochs": args.ppo_epochs,
         "max_new_tokens": args.max_new_tokens, "prompt_pool": args.prompt_pool, "threads": threads,
         "temperature": 1.0, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}
    recipe = bench_recipe(BUILTIN, s)
    cfg = recipe.method_config("ppo")
    s.update(kl_coef=cfg.kl_coef, clip_range=cfg.clip_range, clip_range_value=cfg.clip_range_value,
             vf_coef=cfg.vf_coef, gamma=cfg.gamma, lam=cfg.lam, lr=cfg.lr, value_lr=cfg.value_lr,
             max_grad_norm=cfg.max_grad_norm, seed=recipe.seed)
    return s


# --------------------------------------------------------------------------------------------------
# alignkit's side (this script, run again as a worker process under this environment)


def alignkit_workspace(recipe, reward_dir: str, gold_s: list[float]):
    """alignkit's StageBuilder, except: the reward model is the saved one (not trained and cached), and the
    gold reward (which alignkit's rollout computes every iteration for its statistics) is timed."""
    from alignkit.models.scalar_head import ScalarModel
    from alignkit.stages.builder import StageBuilder

    class BenchWorkspace(StageBuilder):
        @cached_property
        def reward_model(self):
            return ScalarModel.from_backbone(self.recipe.model, cache_dir=self.cache_dir,
                                             runtime=self.runtime,
                                             path=reward_dir)

        @cached_property
        def gold(self):
            return timed(super().gold, gold_s)

    return BenchWorkspace.for_recipe(recipe)


def timed(inner, durations: list[float]):
    """``inner``, appending each call's duration to ``durations``."""
    def call(*a, **k):
        start = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            durations.append(time.perf_counter() - start)
    return call


def time_calls(owner, name: str) -> list[float]:
    """Wrap ``owner.name`` so that each call's duration is appended to the returned list."""
    durations: list[float] = []
    setattr(owner, name, timed(getattr(owner, name), durations))
    return durations


def alignkit_worker(setup_path: str) -> None:
    """alignkit's side: one PPO run through its PPOTrainer, one iteration per ``go`` (see _trl_ppo_worker)."""
    sys.path.insert(0, str(HERE))
    from _trl_ppo_worker import Lockstep

    lock = Lockstep()
    setup = json.loads(Path(setup_path).read_text())
    s = setup["settings"]
    import torch

    torch.set_num_threads(s["threads"])
    warnings.filterwarnings("ignore", category=FutureWarning)
    import transformers

    import alignkit
    import alignkit.methods.ppo as ppo_module

    # no progress bar (trl's side has none); the loop sets `disable` itself, so TQDM_DISABLE cannot
    bar = ppo_module.tqdm
    ppo_module.tqdm = lambda *a, **k: bar(*a, **{**k, "disable": True})

    load_start = time.perf_counter()
    recipe = bench_recipe(setup["policy"], s)
    gold_s: list[float] = []
    ws = alignkit_workspace(recipe, setup["reward"], gold_s)
    _ = ws.gold, ws.sft  # loaded before the clock, as trl's models are; PPOTrainer loads the rest
    trainer = ppo_module.PPOTrainer(ws, recipe.method_config("ppo"))
    assert ws.prompts("train", s["prompt_pool"]) == setup["prompts"], "the prompt pools differ"
    sampling_s = time_calls(trainer.policy, "sample")  # the rollout's sampling (one call per iteration)
    iterations = s["warmup_iterations"] + s["iterations"]
    generated, done = [0], [0]

    def on_step(step: int) -> None:
        tokens, generated[0] = ws.budget.generated_tokens - generated[0], ws.budget.generated_tokens
        lock.end(tokens=tokens, sampling_s=sampling_s[-1], gold_s=gold_s[-1])
        done[0] += 1
        if step < iterations:
            lock.begin()

    ws.ctx.trace = lambda policy: on_step  # the training loop calls it after every PPO iteration
    lock.send(ready=True, load_s=time.perf_counter() - load_start, threads=torch.get_num_threads(),
              optim="torch.optim.AdamW x2 (policy, value)",
              versions={"alignkit": alignkit.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__, "python": sys.version.split()[0]})
    lock.begin()
    trainer.train()
    lock.send(finished=True, optimizer_steps=ws.budget.steps, iterations_run=done[0])


# --------------------------------------------------------------------------------------------------
# running the two sides in lockstep


class Side:
    """A worker process: ``go`` lets it run one iteration, ``read`` returns its next message."""

    def __init__(self, name: str, command: list[str], log: Path):
        self.name, self.log, self.stderr = name, log, log.open("w")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1, cwd=log.parent)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text()[-6000:]
            raise SystemExit(f"{tail}\nthe {self.name} worker stopped (exit {self.proc.returncode}); "
                             "its output is above")
        return json.loads(line)

    def go(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def run_pair(setup: dict, python: Path, folder: Path, repeat: int) -> dict:
    """One run of each side, interleaved iteration by iteration (alignkit, trl, trl, alignkit, ...)."""
    setup_path = folder / "setup.json"
    setup_path.write_text(json.dumps(setup))
    commands = {"alignkit": [sys.executable, str(Path(__file__).resolve()), "--alignkit-worker",
                             str(setup_path)],
                "trl": [str(python), str(TRL_WORKER), str(setup_path)]}
    sides = {name: Side(name, command, folder / f"{name}-{repeat}.log") for name, command in commands.items()}
    try:
        runs = {name: {**side.read(), "iterations": []} for name, side in sides.items()}  # loaded, untimed
        s = setup["settings"]
        for i in range(s["warmup_iterations"] + s["iterations"]):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for name in order:
                runs[name]["iterations"].append({**sides[name].go(), "load": os.getloadavg()[0]})
        for name, side in sides.items():
            runs[name].update(side.read())  # optimiser steps, once training has ended
            side.proc.wait()
    finally:
        for side in sides.values():
            side.close()
    for name, run in runs.items():
        total = s["warmup_iterations"] + s["iterations"]
        assert run["iterations_run"] == len(run["iterations"]) == total, (
            (f"{name} ran {run['iterations_run']} iterations ({len(run['iterations'])} reported), expected "
             f"{total}")
        )
        run["warmup"], run["timed"] = (run["iterations"][:s["warmup_iterations"]],
                                       run["iterations"][s["warmup_iterations"]:])
        del run["iterations"]
    return runs


# --------------------------------------------------------------------------------------------------
# the benchmark


def summarise(run: dict) -> dict:
    """One side's run: totals and rates over its timed iterations."""
    timed = run["timed"]
    wall = [it["wall"] for it in timed]
    total = run["warmup"] + timed
    return {"iterations": len(timed), "wall_s": sum(wall), "iterations_per_s": len(timed) / sum(wall),
            "median_iteration_s": statistics.median(wall), "fastest_iteration_s": min(wall),
            "slowest_iteration_s": max(wall),
            "cpu_s_per_iteration": sum(it["cpu"] for it in timed) / len(timed),
            "sampling_s_per_iteration": sum(it["sampling_s"] for it in timed) / len(timed),
            "tokens_sampled_per_iteration": sum(it["tokens"] for it in timed) / len(timed),
            "optimizer_steps_per_iteration": run["optimizer_steps"] / len(total),
            "gold_s_per_iteration": sum(it.get("gold_s", 0.0) for it in timed) / len(timed),
            "untimed_load_s": run["load_s"]}


def measure(args, python: Path, tmp: Path) -> tuple[list[dict], dict]:
    """Build the shared inputs, then ``args.repeats`` lockstep runs of both sides."""
    import torch

    from alignkit.stages.builder import StageBuilder

    policy_dir, reward_dir, model_info = build_models(tmp, args.model)
    s = settings(args, torch.get_num_threads())
    # exactly the pool alignkit draws its rollouts from, given to trl as its dataset
    prompts = StageBuilder.for_recipe(bench_recipe(str(policy_dir), s)).prompts("train", s["prompt_pool"])
    setup = {"policy": str(policy_dir), "reward": str(reward_dir), "prompts": prompts, "settings": s,
             "output_dir": str(tmp / "trl_out")}
    runs = []
    for repeat in range(args.repeats):
        load = os.getloadavg()[0]
        pair = run_pair(setup, python, tmp, repeat)
        runs.append(pair)
        done = {name: summarise(run) for name, run in pair.items()}
        line = "  ".join(f"{name} {x['iterations_per_s']:.3f} it/s ({x['wall_s']:.1f} s, "
                         f"CPU {x['cpu_s_per_iteration']:.2f} s/it)" for name, x in done.items())
        print(f"  run {repeat + 1}/{args.repeats}: {line}; load average {load:.1f} at start", flush=True)
    info = {"model": model_info, "settings": s, "prompts": len(prompts),
            "versions": {name: runs[0][name]["versions"] for name in SIDES},
            "optimisers": {name: runs[0][name]["optim"] for name in SIDES},
            "threads": {name: runs[0][name]["threads"] for name in SIDES}}
    assert len(set(info["threads"].values())) == 1, f"thread counts differ: {info['threads']}"
    return runs, info


def report(runs: list[dict], info: dict) -> dict:
    """Print the medians, the work check and the ratios; returns them for --json."""
    s, m = info["settings"], info["model"]
    print(f"\nmodel: {m['source']}, GPT-2 {m['layers']} layers x {m['width']}, vocab {m['vocab']}, "
          f"{m['parameters'] / 1e6:.1f}M parameters, fp32, CPU; four models per side (policy, reference, "
          f"reward, value); {info['prompts']} fixed prompts")
    print(f"settings: rollout {s['rollout_size']} prompts, minibatch {s['minibatch_size']}, "
          f"{s['ppo_epochs']} PPO epochs, {s['max_new_tokens']} new tokens, "
          f"temperature {s['temperature']:g}, "
          f"kl_coef {s['kl_coef']} (fixed), {s['threads']} threads, OMP_WAIT_POLICY={s['omp_wait_policy']}; "
          f"{s['warmup_iterations']} untimed warm-up + {s['iterations']} timed iterations per run")
    summaries = {name: [summarise(run[name]) for run in runs] for name in SIDES}
    medians = {name: {key: statistics.median(x[key] for x in rows) for key in rows[0]}
               for name, rows in summaries.items()}
    print(f"\nmedian of {len(runs)} lockstep run(s) per side (times in s; CPU: user + system time of the "
          "side's process, all threads):")
    print(f"{'side':<8} {'it/s':>6} {'s/it':>6} {'median':>7} {'fastest':>8} {'slowest':>8} {'CPU s/it':>9} "
          f"{'sampling s/it':>14} {'tokens/it':>10} {'opt steps/it':>13} {'load s (untimed)':>17}")
    for name, med in medians.items():
        print(f"{name:<8} {med['iterations_per_s']:>6.3f} {1 / med['iterations_per_s']:>6.2f} "
              f"{med['median_iteration_s']:>7.2f} {med['fastest_iteration_s']:>8.2f} "
              f"{med['slowest_iteration_s']:>8.2f} {med['cpu_s_per_iteration']:>9.2f} "
              f"{med['sampling_s_per_iteration']:>14.2f} {med['tokens_sampled_per_iteration']:>10,.0f} "
              f"{med['optimizer_steps_per_iteration']:>13.0f} {med['untimed_load_s']:>17.1f}")
    gold = medians["alignkit"]["gold_s_per_iteration"]
    print(f"(alignkit's iterations include its gold-reward statistics, {gold:.3f} s per iteration; "
          f"optimisers: alignkit {info['optimisers']['alignkit']}, trl one "
          f"{info['optimisers']['trl']} over policy and value)")
    # each alignkit iteration against the trl iteration run right next to it
    paired = [t["wall"] / a["wall"] for run in runs
              for a, t in zip(run["alignkit"]["timed"], run["trl"]["timed"])]
    ratios = {
        "iterations_per_s": medians["alignkit"]["iterations_per_s"] / medians["trl"]["iterations_per_s"],
        "paired_iterations_median": statistics.median(paired),
        "cpu_time": medians["trl"]["cpu_s_per_iteration"] / medians["alignkit"]["cpu_s_per_iteration"],
        "iterations_per_s_per_run": [a["iterations_per_s"] / t["iterations_per_s"]
                                     for a, t in zip(summaries["alignkit"], summaries["trl"])]}
    print("\nalignkit / trl per run, it/s: "
          + " ".join(f"{x:.2f}" for x in ratios["iterations_per_s_per_run"])
          + "; per iteration pair, quartiles: " + " / ".join(f"{x:.2f}" for x in quartiles(paired)))
    for key, label in (("iterations_per_s", "PPO iterations/s (wall)"),
                       ("paired_iterations_median", "median of the paired iterations (wall)"),
                       ("cpu_time", "from CPU time per iteration (load-resistant)")):
        print(f"alignkit/trl {label:<46} {ratios[key]:.2f}")
    return {"info": info, "load_average": os.getloadavg(), "runs": runs, "summaries": summaries,
            "median": medians, "ratios": ratios}


def quartiles(values: list[float]) -> list[float]:
    """Lower quartile, median, upper quartile."""
    return statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3


def set_wait_policy(policy: str) -> None:
    """OpenMP's idle-thread policy, for both sides alike (the workers inherit the environment); must run
    before torch is imported."""
    assert "torch" not in sys.modules, "the OpenMP wait policy must be set before torch is imported"
    if policy != "unset":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--alignkit-worker"]:
        return alignkit_worker(argv[1])
    args = parse_args(argv)
    set_wait_policy(args.omp_wait_policy)
    python = trl_python(args.trl_python)
    import torch

    from alignkit.threads import available_cores

    torch.set_num_threads(args.threads or available_cores())
    warnings.filterwarnings("ignore", category=FutureWarning)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ppo-vs-trl-") as tmp:
        runs, info = measure(args, python, Path(tmp))
    summary = report(runs, info)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
