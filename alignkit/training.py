"""The one optimisation loop that supervised, reward-model and preference training share.

A method supplies the batches and a ``step`` function returning ``(loss, metrics)``; this module owns
the optimiser, learning-rate schedule, gradient clipping, progress bar, metric logging, checkpoints
(resume) and the non-finite guard, and, through :mod:`alignkit.runtime`, mixed precision, gradient
accumulation and data parallelism: a batch is the global one, each process takes its share, splits it
into micro-batches, and weights each micro-batch's mean loss by its share of the batch, so the summed
gradient is the batch mean's whatever the process count. (Losses that couple the examples of a batch,
such as ``aot``'s sort or KTO's z0, see their micro-batch.)
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from alignkit.checkpoint import Checkpointer, TrainState, for_stage, numerical_error
from alignkit.config import option
from alignkit.runlog import MetricsLog
from alignkit.runtime import Runtime, current


@dataclass
class TrainingConfig:
    """Optimisation settings every trained method accepts."""

    lr: float = option(1e-4, "peak learning rate (AdamW)", gt=0)
    batch_size: int = option(16, "sequences (or pairs) per optimiser step, over all processes together", ge=1)
    gradient_accumulation_steps: int = option(1, "split each process's share of a batch into this many "
                                                 "micro-batches, one backward each: the same step in less memory",
                                              ge=1)
    epochs: float = option(1.0, "passes over the training data (fractions allowed)", gt=0)
    max_steps: int = option(0, "train for exactly this many optimiser steps, overriding epochs (0: use epochs)",
                            ge=0)
    warmup_steps: int = option(10, "linear learning-rate warm-up steps", ge=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)", ge=0)
    log_every: int = option(10, "log averaged metrics every N steps", ge=1)
    checkpoint_every: int = option(50, "save a resumable checkpoint every N optimiser steps (0: off)", ge=0)
    skip_nonfinite: bool = option(False, "skip (and count) a step whose loss or gradient norm is NaN/inf "
                                         "instead of stopping the run")

    def check(self):
        if self.gradient_accumulation_steps > self.batch_size:
            yield "gradient_accumulation_steps", f"must be <= batch_size ({self.batch_size})"

    def total_steps(self, n_examples: int) -> int:
        if self.max_steps:
            return self.max_steps
        return math.ceil(self.epochs * math.ceil(n_examples / self.batch_size))


@dataclass
class Budget:
    """What training consumed, recorded next to every result: optimiser steps, the sequences and tokens
    that went through a forward pass with gradients, and the sequences and tokens sampled while training
    (PPO rollouts). Shared stages (pairs, reward model) keep their own budget."""

    steps: int = 0
    train_sequences: int = 0
    train_tokens: int = 0
    generated_sequences: int = 0
    generated_tokens: int = 0
    nonfinite_skipped: int = 0  # steps skipped for a NaN/inf loss or gradient (skip_nonfinite)

    def add_batch(self, batch) -> None:
        """Count a training batch (a :class:`~alignkit.models.sequences.SequenceBatch`): rows, real tokens."""
        self.train_sequences += len(batch)
        self.train_tokens += int(batch.attention_mask.sum())

    def add_rollout(self, rollout) -> None:
        self.generated_sequences += len(rollout.completions)
        self.generated_tokens += rollout.n_tokens

    def as_dict(self) -> dict[str, int]:
        """The counters; ``nonfinite_skipped`` only when a step was skipped, so clean runs read as before."""
        return {k: v for k, v in vars(self).items() if k != "nonfinite_skipped" or v}


def step_is_finite(loss: torch.Tensor, grad_norms: Sequence[torch.Tensor], *, skip: bool, stage: str, step: int,
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


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainingConfig, total_steps: int):
    """AdamW with linear warm-up then linear decay to 10% of the peak rate."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def scale(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return max(0.1, 1.0 - 0.9 * progress)

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


def fit(
    params: Sequence[torch.nn.Parameter] | Iterable[torch.nn.Parameter],
    batches: Sequence,
    step: Callable[[object], tuple[torch.Tensor, dict]],
    cfg: TrainingConfig,
    *,
    log: MetricsLog,
    stage: str,
    models: Sequence[torch.nn.Module] = (),
    budget: Budget | None = None,
    on_step: Callable[[int], None] | None = None,
    checkpointer: Checkpointer | None = None,
) -> list[dict]:
    """Run one optimiser step per batch; returns the logged (averaged) metric records. ``budget`` counts
    the steps; ``on_step(step)`` runs after each one (e.g. to evaluate a checkpoint). With a checkpointer
    (``checkpointer``, else the one the pipeline activated) it resumes from the last checkpoint and saves
    one every ``cfg.checkpoint_every`` steps."""
    params, runtime = list(params), current()
    optimizer, scheduler = make_optimizer(params, cfg, len(batches))
    checkpointer = for_stage(stage, checkpointer)
    state = TrainState(params, [optimizer], [scheduler], budget=budget)
    start, extra = checkpointer.restore(state) if checkpointer else (0, {})
    for model in models:
        model.train()
    pending: dict[str, list[float]] = defaultdict(list, extra.get("pending", {}))
    skipped = extra.get("skipped", 0)
    records = []
    bar = tqdm(batches[start:], desc=stage, unit="step", dynamic_ncols=True, leave=False, initial=start,
               total=len(batches), disable=not runtime.is_main)
    for index, batch in enumerate(bar, start=start + 1):
        loss, metrics = accumulate(step, batch, cfg.gradient_accumulation_steps, runtime, budget)
        norm = runtime.finish_gradients([params], [optimizer], cfg.max_grad_norm)[0]
        if cfg.max_grad_norm:
            metrics["grad_norm"] = norm
        if runtime.overflowed([norm]):
            pass  # fp16 loss scale too high: the scaler lowered it; no update this step
        elif step_is_finite(loss, [norm], skip=cfg.skip_nonfinite, stage=stage, step=index,
                            checkpointer=checkpointer, budget=budget):
            runtime.step([optimizer])
            scheduler.step()
            if budget is not None:
                budget.steps += 1
            pending["loss"].append(float(loss))
            for key, value in metrics.items():
                pending[key].append(float(value))
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        if index % cfg.log_every == 0 or index == len(batches):
            record = {k: sum(v) / len(v) for k, v in pending.items()}
            record["lr"] = scheduler.get_last_lr()[0]
            if skipped:
                record["nonfinite_skipped"] = skipped
            log.log(stage, index, record)
            records.append(record)
            if "loss" in record:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            pending.clear()
        if on_step is not None:
            on_step(index)
        if checkpointer:
            checkpointer.step_done(index, cfg.checkpoint_every, state,
                                   lambda: {"pending": dict(pending), "skipped": skipped})
    for model in models:
        model.eval()
    return records
