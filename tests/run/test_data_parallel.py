"""Data parallelism through accelerate: two CPU processes (gloo) train the same run as one process with the
same global batch, sample exactly the same pairs, and only the main process writes. Also the pieces it
rests on: micro-batches, gradient accumulation and mixed precision in the shared training loop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.context import RunContext
from alignkit.runlog import MetricsLog, read_jsonl
from alignkit.runtime import Runtime
from alignkit.training import TrainingConfig, accumulate, fit, micro_batches

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "dpo_imdb.yaml"
# the global batch is the same for both runs; one process sums 8 pairs' gradients, two sum 4 each and then
# all-reduce, so losses differ only by float summation order
LOSS_TOLERANCE = 1e-4


def _free_port() -> int:
    """A port nobody listens on, so two test sessions at once do not collide on torchrun's default 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


LAUNCH_TWO = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
              "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
needs_launcher = pytest.mark.skipif(not Path(LAUNCH_TWO[0]).exists(),
                                    reason="accelerate's launcher is not installed")


def _run(tmp_path: Path, name: str, overrides: list[str], launcher: list[str]) -> tuple[Path, str]:
    # separate caches: each run samples its pairs
    run_dir, cache = tmp_path / name, tmp_path / f"cache-{name}"
    sets = [arg for item in overrides for arg in ("--set", item)]
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache), "ALIGNKIT_THREADS": "1"}
    out = subprocess.run([*launcher, "-m", "alignkit", "run", str(RECIPE), "--out", str(run_dir), *sets],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out.stdout


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["stage"] == "dpo"]


@needs_launcher
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "device=cpu", "dpo.batch_size=8", "dpo.max_steps=6", "dpo.log_every=1",
                 "dpo.warmup_steps=0", "dpo.lr=0.003", "eval.diversity=false"]
    one, one_out = _run(tmp_path, "one", overrides, [sys.executable])
    # and each process accumulates its 4 pairs in 2 micro-batches: still the same step
    two, two_out = _run(tmp_path, "two", [*overrides, "dpo.gradient_accumulation_steps=2"], LAUNCH_TWO)

    # sampling is shared out by chunks with one seed per chunk: the two processes drew exactly the pairs one
    # did
    # (the gold classifier each cache trained may differ in the last digits: BLAS threads differ per launcher)
    pairs = [read_jsonl(next((tmp_path / f"cache-{n}" / "preferences").glob("*.jsonl"))) for n in ("one",
                                                                                                   "two")]
    texts = [[(r["prompt"], r["chosen"], r["rejected"]) for r in rows] for rows in pairs]
    assert texts[0] == texts[1] and len(texts[0]) > 100
    assert max(abs(a["chosen_score"] - b["chosen_score"]) for a, b in zip(*pairs)) < 1e-4

    ones, twos = _losses(one), _losses(two)
    assert len(ones) == len(twos) == 6
    assert ones[-1] < ones[0] - 0.01  # it trains: a curve worth comparing
    assert max(abs(a - b) for a, b in zip(ones, twos)) < LOSS_TOLERANCE, (ones, twos)

    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["runtime"]["processes"] == 2 and manifest["runtime"]["distributed_type"] == "MULTI_CPU"
    assert json.loads((one / "manifest.json").read_text())["runtime"]["processes"] == 1
    # the budget counts both processes' shares: the same tokens as one process trained on
    summaries = [json.loads((d / "eval" / "summary.json").read_text()) for d in (one, two)]
    assert summaries[0]["budget"] == summaries[1]["budget"]
    assert summaries[1]["n_samples"] == summaries[0]["n_samples"] == 24
    assert abs(summaries[0]["gold_reward_mean"] - summaries[1]["gold_reward_mean"]) < 0.05
    # only the main process wrote: one JSON summary on stdout, nothing but the run itself in the folder
    assert json.loads(two_out)["name"] == json.loads(one_out)["name"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@needs_launcher
def test_ppo_trains_in_two_processes_and_only_the_main_one_writes(tmp_path, tiny_overrides):
    recipe = RECIPE.with_name("ppo_imdb.yaml")
    sets = [*tiny_overrides, "device=cpu", "ppo.reward=gold", "ppo.value_init=policy", "ppo.steps=2",
            "ppo.rollout_size=8", "ppo.minibatch_size=4", "ppo.max_new_tokens=8", "ppo.prompt_pool=32",
            "eval.every_steps=1", "eval.trajectory_prompts=8", "eval.diversity=false"]
    run_dir = tmp_path / "ppo"
    env = {**os.environ, "ALIGNKIT_CACHE": str(tmp_path / "cache"), "ALIGNKIT_THREADS": "1"}
    out = subprocess.run([*LAUNCH_TWO, "-m", "alignkit", "run", str(recipe), "--out", str(run_dir),
                          *(a for item in sets for a in ("--set", item))],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)  # one summary: the other process printed nothing
    assert summary["budget"]["generated_sequences"] == 2 * 8 and summary["budget"]["steps"] == 2 * 4 * 2
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["stage"] == "ppo"]
    assert steps == [1, 2]  # logged once per iteration, by one process
    assert [p["step"] for p in read_jsonl(run_dir / "eval" / "trajectory.jsonl")] == [1, 2]
    assert not list(tmp_path.glob("alignkit-*rank*"))


@needs_launcher
def test_compare_in_two_processes_writes_one_report(tmp_path, tiny_overrides):
    # device auto: on a machine without CUDA it must still form the CPU process group, not two lone processes
    sets = [*tiny_overrides, "sft.max_steps=3", "sft.batch_size=4", "eval.diversity=false",
            "eval.temperatures=[]"]
    env = {**os.environ, "ALIGNKIT_CACHE": str(tmp_path / "cache"), "ALIGNKIT_THREADS": "1"}
    out = subprocess.run([*LAUNCH_TWO, "-m", "alignkit", "compare", "sft", "--out", str(tmp_path / "cmp"),
                          *(a for item in sets for a in ("--set", item))],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("entry ") == 1 and "sft" in out.stdout  # one table, from the main process
    assert (tmp_path / "cmp" / "report.md").is_file()
    summary = json.loads((tmp_path / "cmp" / "runs" / "sft" / "eval" / "summary.json").read_text())
    assert summary["budget"]["steps"] == 3 and summary["budget"]["train_sequences"] == 12
    manifest = json.loads((tmp_path / "cmp" / "runs" / "sft" / "manifest.json").read_text())
    assert manifest["runtime"]["processes"] == 2


def test_micro_batches_cover_the_batch_in_order():
    assert micro_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert micro_batches([1, 2], 4) == [[1], [2]]
    assert micro_batches([], 2) == []


def _linear_problem():
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randn(12)
    return x, y


def _train(cfg: TrainingConfig, runtime: Runtime | None = None) -> torch.Tensor:
    x, y = _linear_problem()
    weight = torch.nn.Parameter(torch.zeros(3))

    def step(index):
        loss = ((x[index] @ weight - y[index]) ** 2).mean()
        return loss, {"mse": loss.detach()}

    fit(RunContext(runtime or Runtime("cpu"), MetricsLog(None)), [weight], [list(range(12))] * 5, step, cfg,
        stage="test")
    return weight.detach().clone()


def test_gradient_accumulation_takes_the_same_steps():
    base = dict(lr=0.05, batch_size=12, warmup_steps=0, max_grad_norm=0)
    whole = _train(TrainingConfig(**base))
    split = _train(TrainingConfig(**base, gradient_accumulation_steps=5))  # 3+3+2+2+2: unequal micro-batches
    assert not torch.equal(whole, torch.zeros(3))
    assert torch.allclose(whole, split, atol=1e-6), (whole, split)


def test_accumulate_weights_metrics_by_share_of_the_batch():
    runtime = Runtime("cpu")
    values = torch.arange(5.0, requires_grad=True)

    def step(index):
        part = values[index]
        return part.sum() * 0 + part.mean(), {"mean": part.mean().detach()}

    loss, metrics = accumulate(step, [0, 1, 2, 3, 4], 2, runtime)  # micro-batches [0,1,2] and [3,4]
    assert float(loss) == pytest.approx(2.0) and metrics["mean"] == pytest.approx(2.0)
    assert torch.allclose(values.grad, torch.full((5,), 0.2))  # d(mean of all five)/dx


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32(precision):
    base = dict(lr=0.05, batch_size=12, warmup_steps=0, max_grad_norm=1.0)
    reference = _train(TrainingConfig(**base))
    runtime = Runtime("cpu", precision)
    with runtime.autocast():
        assert torch.get_autocast_dtype("cpu") == (torch.bfloat16 if precision == "bf16" else torch.float16)
    mixed = _train(TrainingConfig(**base), runtime)
    exact = _train(TrainingConfig(**base), runtime.fp32())  # what the cached builtin model trains under
    assert runtime.precision == precision and runtime.fp32().precision == "fp32"  # a view, not a switch
    assert torch.allclose(reference, mixed, atol=0.05), (reference, mixed)
    assert not torch.equal(reference, mixed)  # autocast really computed in the lower precision
    assert torch.equal(reference, exact)


def test_a_sharded_config_is_refused(monkeypatch):
    from accelerate.utils import DistributedType

    from alignkit.errors import AlignkitError

    monkeypatch.setattr("accelerate.Accelerator.distributed_type", DistributedType.FSDP, raising=False)
    with pytest.raises(AlignkitError, match="distributed type FSDP is not supported"):
        Runtime("cpu", "fp32")


def test_an_fsdp_launch_on_cpu_is_refused_not_ignored(monkeypatch):
    """accelerate runs plain CPU processes when launched with --use_fsdp on a machine without GPUs."""
    from alignkit.errors import AlignkitError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(AlignkitError, match="distributed type FSDP is not supported"):
        Runtime("cpu", "fp32")


def test_one_named_device_under_several_processes_is_refused(monkeypatch):
    from alignkit.errors import AlignkitError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("accelerate.Accelerator.num_processes", 2, raising=False)
    with pytest.raises(AlignkitError,
                       match="device: 'cuda:1' names one device, but accelerate launched 2 processes"):
        Runtime("cuda:1", "fp32")


def test_launched_processes_that_form_no_group_are_refused(monkeypatch):
    """Two lone processes would each train and write the whole run: refused, naming what went wrong."""
    from alignkit.errors import AlignkitError

    monkeypatch.setenv("WORLD_SIZE", "2")  # the launcher started two, but this one sees a group of one
    with pytest.raises(AlignkitError, match="accelerate launched 2 processes but they formed a group of 1"):
        Runtime("cpu", "fp32")


def test_more_micro_batches_than_the_batch_is_one_config_line():
    from alignkit.config import ConfigError
    from alignkit.recipe import load_recipe

    with pytest.raises(ConfigError, match="dpo.gradient_accumulation_steps: must be <= batch_size \\(4\\)"):
        load_recipe(RECIPE, ["dpo.batch_size=4", "dpo.gradient_accumulation_steps=8"])
    with pytest.raises(ConfigError, match="ppo.gradient_accumulation_steps: must be <= minibatch_size"):
        load_recipe(RECIPE.with_name("ppo_imdb.yaml"), ["ppo.gradient_accumulation_steps=64"])


def test_trl_generation_batch_must_split_evenly_between_processes():
    from types import SimpleNamespace

    from alignkit.errors import AlignkitError
    from alignkit.methods.online_rl import trl_arguments
    from alignkit.recipe import load_recipe

    recipe = load_recipe(RECIPE.with_name("grpo_imdb.yaml"), ["grpo.prompts_per_step=3",
                                                              "grpo.num_generations=3"])
    cfg = recipe.method_config("grpo")
    ws = SimpleNamespace(train_seed=0, device=torch.device("cpu"), runtime=SimpleNamespace(world=2,
                                                                                           precision="fp32"),
                         recipe=recipe)
    with pytest.raises(AlignkitError,
                       match="= 9 completions cannot be shared out evenly between 2 processes"):
        trl_arguments(ws, cfg, "unused")
    ws.runtime.world = 3
    assert trl_arguments(ws, cfg, "unused")["per_device_train_batch_size"] == 3
