"""What one run's training passes around, explicitly: the :class:`RunContext` (runtime, metrics log, budget,
checkpointer, trajectory hook) that :func:`~alignkit.training.fit` and PPO's loop take as their first
argument, and the :class:`Budget` it counts into. A shared stage built on the way (the reward model, the
builtin model) gets a context of its own: its own budget, no checkpointer, no trajectory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from alignkit.checkpoint import Checkpointer
from alignkit.runlog import MetricsLog
from alignkit.runtime import Runtime

OnStep = Callable[[int], None]


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


@dataclass
class RunContext:
    """The run's runtime (device, precision, processes), where metrics go, what training consumed, where
    checkpoints go, and ``trace(policy) -> on_step``: the hook that evaluates trajectory checkpoints."""

    runtime: Runtime
    log: MetricsLog = field(default_factory=lambda: MetricsLog(None))
    budget: Budget = field(default_factory=Budget)
    checkpointer: Optional[Checkpointer] = None
    trace: Optional[Callable[[Any], Optional[OnStep]]] = None

    def checkpointer_for(self, stage: str) -> Optional[Checkpointer]:
        """The checkpointer of a training loop named ``stage``, if this context has one and the loop may claim
        it (the first loop of a run claims it; a later loop of another stage runs without checkpoints)."""
        checkpointer = self.checkpointer
        return checkpointer if checkpointer is not None and checkpointer.claim(stage) else None

    def on_step(self, policy) -> Optional[OnStep]:
        """The trajectory hook for a loop training ``policy`` (None when trajectories are off)."""
        return self.trace(policy) if self.trace is not None and policy is not None else None

    def for_shared_stage(self, runtime: Optional[Runtime] = None) -> "RunContext":
        """A context for a shared stage trained on the way: same log, its own budget, no checkpointer, no
        trajectory (optionally another runtime, e.g. :meth:`~alignkit.runtime.Runtime.fp32`)."""
        return dataclasses.replace(self, runtime=runtime or self.runtime, budget=Budget(), checkpointer=None,
                                   trace=None)
