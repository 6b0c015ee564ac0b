"""The one optimisation loop every alignkit trainer shares (supervised, reward model, preference losses, PPO).

A method supplies the batches and a ``step`` function returning ``(loss, metrics)``; this module owns the
optimiser, learning-rate schedule, gradient clipping, the non-finite guard (:func:`apply_update`), and the
loop around the steps: resume, progress bar, metric logging, trajectory hook and checkpoints
(:class:`TrainingLoop`). Through the run's :class:`~alignkit.context.RunContext` it also owns mixed precision,
gradient accumulation and data parallelism: a batch is the global one, each process takes its share, splits
it into micro-batches, and weights each micro-batch's mean loss by its share of the batch, so the summed
gradient is the batch mean's whatever the process count. (Losses that couple the examples of a batch, such as
``aot``'s sort or KTO's z0, see their micro-batch.) :func:`fit` is the loop for one optimiser over batches;
PPO drives :class:`TrainingLoop` and :func:`apply_update` itself, with two optimisers and a rollout per step.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Optional, Sequence

import torch

from alignkit.checkpoint import Checkpointer, TrainState, numerical_error
from alignkit.config import option
from alignkit.console import bar as progress_bar
from alignkit.context import Budget, RunContext
from alignkit.runtime import Runtime
from alignkit.schedule import DEFAULT as DEFAULT_SCHEDULE
from alignkit.schedule import SCHEDULES, multiplier, schedule_problems, warmup_from_aliases, warmup_length


@dataclass
class OptimConfig:
    """What every alignkit training loop accepts, whatever it iterates over (batches, PPO iterations)."""

    ALIASES: ClassVar[dict[str, str]] = {"learning_rate": "lr", "save_steps": "checkpoint_every",
                                         "lr_scheduler_type": "lr_schedule"}

    lr: float = option(1e-4, "peak learning rate (AdamW; trl: learning_rate)", gt=0)
    lr_schedule: str = option(DEFAULT_SCHEDULE, "learning-rate schedule after warm-up: linear_to_tenth "
                                                "(linear decay to 10% of the peak), or trl's linear (to 0), "
                                                "cosine (to 0), constant (no warm-up), constant_with_warmup "
                                                "(trl: lr_scheduler_type)", choices=SCHEDULES)
    gradient_accumulation_steps: int = option(1, "split each process's share of a batch (PPO: minibatch) "
                                                 "into this many micro-batches, one backward each: the same "
                                                 "step in less memory", ge=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)", ge=0)
    checkpoint_every: int = option(50, "save a resumable checkpoint every N optimiser steps (PPO: "
                                       "iterations; 0: off; trl: save_steps)", ge=0)
    skip_nonfinite: bool = option(False, "skip (and count) a step whose loss or gradient norm is NaN/inf "
                                         "instead of stopping the run")
    lr_schedule_steps: int = option(0, "the learning-rate schedule spans this many steps (PPO: iterations), "
                                       "and later steps keep the peak rate (the constant tail that "
                                       "--until-converged extends runs with); 0: the schedule spans the "
                                       "whole run", ge=0)
    keep_final_state: bool = option(False,
                                    "keep the training state of the last step in checkpoints/ when the "
                                           "run finishes, so it can be extended (--until-converged sets it)")


@dataclass
class TrainingConfig(OptimConfig):
    """Optimisation settings of every method trained by :func:`fit` over batches of examples."""

    ALIASES: ClassVar[dict[str, str]] = {"num_train_epochs": "epochs", "logging_steps": "log_every"}

    batch_size: int = option(16, "sequences (or pairs) per optimiser step, over all processes together "
                                 "(trl: per_device_train_batch_size x gradient_accumulation_steps x "
                                 "processes)", ge=1)
    epochs: float = option(1.0, "passes over the training data (fractions allowed; trl: num_train_epochs)",
                           gt=0)
    max_steps: int = option(0, "train for exactly this many optimiser steps, overriding epochs (0: use "
                               "epochs)",
                            ge=0)
    warmup_steps: int = option(10, "linear learning-rate warm-up steps", ge=0)
    warmup_ratio: float = option(0.0, "warm-up as a fraction of the schedule's steps, rounded up; given "
                                      "without warmup_steps, it replaces their default (trl: warmup_ratio, "
                                      "or warmup_steps below 1)", ge=0, lt=1)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    log_every: int = option(10, "log averaged metrics every N steps (trl: logging_steps)", ge=1)

    @staticmethod
    def from_aliases(data: dict) -> tuple[dict, tuple[str, str] | None]:
        """trl's warm-up (:func:`~alignkit.schedule.warmup_from_aliases`), and per_device_train_batch_size as
        batch_size: it times gradient_accumulation_steps times the processes (WORLD_SIZE), trl's effective
        batch; each micro-batch is then per_device_train_batch_size (a wrong value is a problem; both sizes
        given are refused)."""
        data = warmup_from_aliases(data)
        if "per_device_train_batch_size" not in data:
            return data, None
        per_device = data.pop("per_device_train_batch_size")
        if "batch_size" in data:
            return data, ("per_device_train_batch_size",
                          "batch_size is also given (the whole batch per step); give one")
        if isinstance(per_device, bool) or not isinstance(per_device, int) or per_device < 1:
            return data, ("per_device_train_batch_size", f"expected a positive integer, got {per_device!r}")
        accumulation = data.get("gradient_accumulation_steps", 1)
        accumulation = accumulation if isinstance(accumulation, int) and accumulation > 0 else 1
        data["batch_size"] = per_device * accumulation * int(os.environ.get("WORLD_SIZE", "1"))
        return data, None

    def check(self):
        if self.gradient_accumulation_steps > self.batch_size:
            yield "gradient_accumulation_steps", f"must be <= batch_size ({self.batch_size})"
        yield from schedule_problems(self.lr_schedule, self.warmup_steps, self.warmup_ratio)

    def total_steps(self, n_examples: int) -> int:
        if self.max_steps:
            return self.max_steps
        return math.ceil(self.epochs * math.ceil(n_examples / self.batch_size))


def step_is_finite(loss: torch.Tensor, grad_norms: Sequence[torch.Tensor], *, skip: bool, stage: str,
                   step: int,
                   checkpointer: Checkpointer | None, budget: Budget | None) -> bool:
    """The non-finite guard of every loop: True when the optimiser step may go ahead; False when a NaN/inf
    loss or gradient norm is skipped (and counted in ``budget``); raises :class:`NumericalError` otherwise."""
    if math.isfinite(float(loss.detach())):
        bad = next((float(n) for n in grad_norms if not math.isfinite(float(n))), None)
        if bad is None:
            return True
        what = f"gradient norm is {bad}"
    else:
        what = f"loss is {float(loss.detach())}"
    if not skip:
        raise checkpointer.fault(step, what) if checkpointer else numerical_error(stage, step, what)
    if budget is not None:
        budget.nonfinite_skipped += 1
    return False


def make_optimizer(params: Iterable[torch.nn.Parameter], *, lr: float, total_steps: int,
                   warmup_steps: int = 0, weight_decay: float = 0.0, tail_after: int = 0,
                   schedule: str = DEFAULT_SCHEDULE):
    """AdamW with ``schedule`` (:mod:`alignkit.schedule`) over ``total_steps`` after ``warmup_steps`` of
    warm-up; with ``tail_after``, every step from then on at the peak rate again (a constant tail)."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def scale(step: int) -> float:
        if tail_after and step >= tail_after:
            return 1.0
        return multiplier(step, schedule=schedule, warmup=warmup_steps, total=total_steps)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, scale)


def batch_indices(n: int, cfg: TrainingConfig, seed: int) -> list[list[int]]:
    """Shuffled mini-batches of example indices covering ``cfg.epochs`` passes (capped by max_steps)."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    total = cfg.total_steps(n)
    while len(batches) < total:
        order = torch.randperm(n, generator=generator).tolist()
        batches.extend(order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size))
    return batches[:total]


def micro_batches(items: Sequence, parts: int) -> list[list]:
    """``items`` in at most ``parts`` consecutive, non-empty, near-equal pieces (none for no items: a process
    whose share of a short last batch is empty only joins the collectives)."""
    items = list(items)
    if not items:
        return []
    parts = min(parts, len(items))
    size, extra = divmod(len(items), parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def accumulate(step: Callable[[list], tuple[torch.Tensor, dict]], batch: Sequence, accumulation_steps: int,
               runtime: Runtime, budget: Budget | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward and backward this process's share of ``batch`` in micro-batches, each weighted by its share
    of the whole batch; returns the batch's loss and metrics (weighted means over every process). What the
    processes trained on is added up in ``budget``, which ``step`` counted only this process's share of."""
    share = runtime.shard(batch)
    counted = (budget.train_sequences, budget.train_tokens) if budget is not None else (0, 0)
    totals: dict[str, float] = {"loss": 0.0}
    for part in micro_batches(share, accumulation_steps):
        weight = len(part) / len(batch)
        with runtime.autocast():
            loss, metrics = step(part)
        runtime.backward(loss * weight)
        totals["loss"] += float(loss.detach()) * weight
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
    if budget is not None and runtime.world > 1:
        totals[_SEQUENCES] = budget.train_sequences - counted[0]
        totals[_TOKENS] = budget.train_tokens - counted[1]
    totals = runtime.sum(totals)
    if _SEQUENCES in totals:
        budget.train_sequences = counted[0] + int(totals.pop(_SEQUENCES))
        budget.train_tokens = counted[1] + int(totals.pop(_TOKENS))
    loss = totals.pop("loss")
    return torch.tensor(loss), totals


_SEQUENCES, _TOKENS = " budget/sequences", " budget/tokens"  # summed with the metrics, never logged


APPLIED, OVERFLOW, SKIPPED = "applied", "overflow", "skipped"


def apply_update(ctx: RunContext, state: TrainState, groups: Sequence[Sequence[torch.nn.Parameter]],
                 loss: torch.Tensor, cfg: OptimConfig, *, stage: str, step: int,
                 checkpointer: Checkpointer | None) -> tuple[str, list[torch.Tensor]]:
    """The end of every optimiser step, after the last backward: sum gradients across processes, clip each
    parameter group, then step every optimiser and scheduler of ``state`` and count the step, unless fp16
    loss scaling overflowed (``OVERFLOW``: the scaler lowered its scale) or the loss or a gradient norm is
    not finite (``SKIPPED`` with ``skip_nonfinite``, else :class:`NumericalError`). Gradients are cleared
    either way. Returns what happened and each group's norm before clipping."""
    runtime = ctx.runtime
    norms = runtime.finish_gradients(groups, state.optimizers, cfg.max_grad_norm)
    if runtime.overflowed(norms):
        status = OVERFLOW
    elif step_is_finite(loss, norms, skip=cfg.skip_nonfinite, stage=stage, step=step,
                        checkpointer=checkpointer,
                        budget=ctx.budget):
        runtime.step(state.optimizers)
        for scheduler in state.schedulers:
            scheduler.step()
        ctx.budget.steps += 1
        status = APPLIED
    else:
        status = SKIPPED
    for optimizer in state.optimizers:
        optimizer.zero_grad(set_to_none=True)
    return status, norms


class TrainingLoop:
    """The loop around a trainer's steps: resume from the newest checkpoint of ``stage``, a progress bar, the
    logged records, the trajectory hook after every step and a checkpoint every ``checkpoint_every`` steps.
    ``body(step) -> record or None`` does one step; a record is logged under ``stage`` at that step."""

    def __init__(self, ctx: RunContext, stage: str, state: TrainState, total: int, *, checkpoint_every: int,
                 trace=None, unit: str = "step", keep_final: bool = False):
        """``trace``: the policy whose trajectory checkpoints ``ctx`` evaluates after each step;
        ``keep_final``:
        checkpoint the last step and keep it when the run finishes (a run --until-converged extends)."""
        self.ctx, self.stage, self.state, self.total = ctx, stage, state, total
        self.checkpoint_every, self.unit, self.keep_final = checkpoint_every, unit, keep_final
        self.on_step = ctx.on_step(trace)
        self.checkpointer = ctx.checkpointer_for(stage)
        self.start, self.restored = self.checkpointer.restore(state) if self.checkpointer else (0, {})

    def run(self, body: Callable[[int], Optional[dict]], extra: Callable[[], dict] = dict) -> None:
        """Steps ``start + 1`` to ``total``; ``extra()`` is what a checkpoint keeps beside the state."""
        bar = progress_bar(range(self.start + 1, self.total + 1), desc=self.stage, unit=self.unit,
                           leave=False,
                           initial=self.start, total=self.total, main=self.ctx.runtime.is_main)
        for step in bar:
            record = body(step)
            if record is not None:
                self.ctx.log.log(self.stage, step, record)
                if "loss" in record:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.on_step is not None:
                self.on_step(step)
            if self.checkpointer:
                self.checkpointer.step_done(step, self.checkpoint_every, self.state, extra)
        if self.checkpointer and self.keep_final:
            self.checkpointer.keep_final = True
            if self.start < self.total and not (
                self.checkpoint_every and self.total % self.checkpoint_every == 0
            ):
                self.checkpointer.save(self.total, self.state, extra())


def fit(ctx: RunContext, params: Sequence[torch.nn.Parameter] | Iterable[torch.nn.Parameter],
        batches: Sequence,
        step: Callable[[object], tuple[torch.Tensor, dict]], cfg: TrainingConfig, *, stage: str,
        models: Sequence[torch.nn.Module] = (), trace=None) -> list[dict]:
    """Run one optimiser step per batch under ``ctx``; returns the logged (averaged) metric records.
    ``ctx.budget`` counts the steps; with a checkpointer in ``ctx`` the loop resumes from its last checkpoint
    and saves one every ``cfg.checkpoint_every`` steps; ``trace`` is the policy whose trajectory checkpoints
    are evaluated (None: no trajectory)."""
    params, runtime = list(params), ctx.runtime
    span = cfg.lr_schedule_steps or len(batches)
    warmup = warmup_length(span, cfg.warmup_steps, cfg.warmup_ratio)
    optimizer, scheduler = make_optimizer(params, lr=cfg.lr, total_steps=span, warmup_steps=warmup,
                                          weight_decay=cfg.weight_decay, tail_after=cfg.lr_schedule_steps,
                                          schedule=cfg.lr_schedule)
    state = TrainState(params, [optimizer], [scheduler], budget=ctx.budget)
    loop = TrainingLoop(ctx, stage, state, len(batches), checkpoint_every=cfg.checkpoint_every, trace=trace,
                        keep_final=cfg.keep_final_state)
    for model in models:
        model.train()
    pending: dict[str, list[float]] = defaultdict(list, loop.restored.get("pending", {}))
    skipped = loop.restored.get("skipped", 0)
    records = []

    def body(index: int) -> Optional[dict]:
        nonlocal skipped
        loss, metrics = accumulate(step, batches[index - 1], cfg.gradient_accumulation_steps, runtime,
                                   ctx.budget)
        status, (norm,) = apply_update(ctx, state, [params], loss, cfg, stage=stage, step=index,
                                       checkpointer=loop.checkpointer)
        if cfg.max_grad_norm:
            metrics["grad_norm"] = norm
        if status == APPLIED:
            pending["loss"].append(float(loss))
            for key, value in metrics.items():
                pending[key].append(float(value))
        elif status == SKIPPED:
            skipped += 1
        if index % cfg.log_every and index != len(batches):
            return None
        record = {k: sum(v) / len(v) for k, v in pending.items()}
        record["lr"] = scheduler.get_last_lr()[0]
        if skipped:
            record["nonfinite_skipped"] = skipped
        records.append(record)
        pending.clear()
        return record

    loop.run(body, lambda: {"pending": dict(pending), "skipped": skipped})
    for model in models:
        model.eval()
    return records
