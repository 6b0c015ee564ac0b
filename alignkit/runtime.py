"""The process's one ``accelerate.Accelerator``: its device, mixed precision, and data parallelism.

A run makes it once (:func:`start`) and passes it on explicitly: in its :class:`~alignkit.context.RunContext`
to training loops, and as an argument to sampling, the KL pass and cache builds.
Under ``accelerate launch`` every process runs the same program on the same data: each takes its share of
every training batch (gradients are summed across processes before clipping, so a step is the step one
process would take on the whole batch), each samples its share of every sampling chunk (gathered, so every
process holds the same samples), and only the main process writes the run directory and the caches.

Data parallelism here is gradient averaging by one all-reduce per optimiser step, not DDP/FSDP/DeepSpeed
wrapping; accelerate configs that shard the model itself are refused with a clear error.
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
from contextlib import nullcontext
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

from alignkit.errors import AlignkitError
from alignkit.threads import launched_world

T = TypeVar("T")
R = TypeVar("R")

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # ours -> accelerate's mixed_precision
# set by accelerate launch
SHARDING_ENV = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}


def device_problem(name: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None when it can): checked at recipe load, so a run
    never starts, or writes anything, on a device it cannot have."""
    if name in ("auto", "cpu"):
        return None
    if name == "mps":
        return None if torch.backends.mps.is_available() else "'mps' requested but MPS is not available"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        return f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)"
    if not torch.cuda.is_available():
        return f"{name!r} requested but CUDA is not available on this machine"
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        return f"{name!r} requested but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
    return None


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device of a validated ``device`` setting (``auto``: CUDA when present, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise AlignkitError(f"device: {problem}")
    return torch.device(name)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class Runtime:
    """Device, precision and the process group of this process, with the few collectives alignkit needs."""

    def __init__(self, device: str = "auto", precision: str = "fp32"):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType

        mixed = PRECISIONS[precision]
        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision", mixed) != mixed:
            AcceleratorState._reset_state()  # a second run in one process (tests) with another precision
        # accelerate forms a CPU process group (gloo) only when told cpu=True; auto means CPU without CUDA
        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(cpu=on_cpu, mixed_precision=mixed)
        self.precision, self.requested = precision, device
        kind = self.accelerator.distributed_type
        # on CPU accelerate ignores an FSDP/DeepSpeed config and runs plain processes: refused alike, not
        # ignored
        asked = next((name for name, flag in SHARDING_ENV.items() if _env_flag(flag)), None)
        if kind not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU) or asked:
            raise AlignkitError(f"accelerate config: distributed type {asked or kind.value} is not "
                                "supported; alignkit "
                                "trains data-parallel (accelerate launch --multi_gpu --num_processes N), "
                                "not "
                                f"model-sharded")
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        if self.world > 1 and device not in ("auto", "cpu"):
            raise AlignkitError(f"device: {device!r} names one device, but accelerate launched {self.world} "
                                f"processes; use device: auto (each process takes its own) or cpu")
        if self.world != launched_world():  # each process would train (and write) the whole run on its own
            raise AlignkitError(f"accelerate launched {launched_world()} processes but they formed a group "
                                "of "
                                f"{self.world} (device {device!r}, distributed type {kind.value}); launch "
                                "with "
                                f"--multi_gpu and use device: auto or cpu")
        if device in ("auto", "cpu") or self.world > 1:
            self.device = self.accelerator.device
        else:
            self.device = resolve_device(device)
        # fp16 needs loss scaling; our own scaler, so it also works (and is testable) on CPU
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def __repr__(self) -> str:
        return (
            f"Runtime(device={self.device}, precision={self.precision}, process {self.rank + 1}/{self.world})"
        )

    def describe(self) -> dict:
        """What the manifest records about how this run computed."""
        return {"device": str(self.device), "precision": self.precision, "processes": self.world,
                "distributed_type": self.accelerator.distributed_type.value}

    # ---------------------------------------------------------------------------------------------
    # training: mixed precision and gradients

    def autocast(self):
        """Forward passes of training run under this: torch autocast at bf16/fp16, nothing at fp32. (Not
        accelerate's: on CPU it quietly autocasts fp16 to bf16.)"""
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def fp32(self) -> "Runtime":
        """This runtime training in fp32 whatever the run's precision (same device and processes): for shared
        artifacts cached without precision in their key (the builtin model), which must come out the same
        for every run."""
        view = copy.copy(self)
        view.precision, view.scaler = "fp32", None
        return view

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def finish_gradients(self, groups: Sequence[Sequence[torch.nn.Parameter]], optimizers: Sequence,
                         max_norm: float) -> list[torch.Tensor]:
        """After the last backward of a step: sum gradients across processes, undo fp16 loss scaling, clip
        each parameter group to ``max_norm`` (0: no clipping). Returns each group's norm before clipping."""
        if self.world > 1:
            self.all_reduce_gradients([p for group in groups for p in group])
        if self.scaler:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)
        return [torch.nn.utils.clip_grad_norm_(group, max_norm or math.inf) for group in groups]

    def overflowed(self, norms: Sequence[torch.Tensor]) -> bool:
        """fp16 only: a non-finite gradient means the loss scale was too high. The scaler lowers it and the
        step is skipped, as loss scaling intends; it is not a numerical fault of the run."""
        if self.scaler is None or all(math.isfinite(float(n)) for n in norms):
            return False
        self.scaler.update()
        return True

    def step(self, optimizers: Sequence) -> None:
        """Apply the optimisers (through the fp16 scaler when there is one)."""
        for optimizer in optimizers:
            self.scaler.step(optimizer) if self.scaler else optimizer.step()
        if self.scaler:
            self.scaler.update()

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes in one flat all-reduce (a parameter a process
        did not use counts as zero there)."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    # ---------------------------------------------------------------------------------------------
    # sharing work between processes

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of a global batch (every ``world``-th item from its rank)."""
        return list(items[self.rank::self.world])

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a metric dict over the processes (processes may hold different keys: a missing key is 0)."""
        if self.world == 1:
            return dict(values)
        keys = sorted({k for part in self.gather_object(sorted(values)) for k in part})
        totals = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64,
                              device=self.device)
        torch.distributed.all_reduce(totals)
        return dict(zip(keys, totals.tolist()))

    def gather_object(self, obj: T) -> list[T]:
        """``obj`` of every process, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """The main process's ``obj``, on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def map_chunks(self, fn: Callable[[int, T], R], chunks: Sequence[T]) -> list[R]:
        """``[fn(i, chunk) for i, chunk in enumerate(chunks)]`` with chunk ``i`` computed by process
        ``i % world``; every process gets the whole list. ``fn`` must not depend on which process runs it."""
        if self.world == 1:
            return [fn(i, chunk) for i, chunk in enumerate(chunks)]
        mine = {i: fn(i, chunks[i]) for i in range(self.rank, len(chunks), self.world)}
        merged: dict[int, R] = {}
        for part in self.gather_object(mine):
            merged.update(part)
        return [merged[i] for i in range(len(chunks))]

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()


def start(device: str = "auto", precision: str = "fp32", reuse: Runtime | None = None) -> Runtime:
    """The runtime for these settings: ``reuse`` when it has them (one accelerator for every run of a
    comparison), else a new one. Entry points call this; everything below receives the runtime it returns."""
    if reuse is not None and (reuse.precision, reuse.requested) == (precision, device):
        return reuse
    return Runtime(device, precision)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators: a run's training and sampling start from ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
