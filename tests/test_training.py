"""The shared training loop (alignkit.training): what one optimiser step does with a non-finite loss, how
``fit`` averages and logs, and how :class:`TrainingLoop` resumes from its checkpoint with the
loop's extras."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import cpu_runtime

from alignkit.checkpoint import Checkpointer, NumericalError, TrainState
from alignkit.context import RunContext
from alignkit.runlog import MetricsLog
from alignkit.training import (
    APPLIED,
    SKIPPED,
    OptimConfig,
    TrainingConfig,
    TrainingLoop,
    apply_update,
    fit,
    make_optimizer,
)


def _state(weight: torch.nn.Parameter, ctx: RunContext) -> TrainState:
    optimizer, scheduler = make_optimizer([weight], lr=0.1, total_steps=10)
    return TrainState([weight], [optimizer], [scheduler], budget=ctx.budget)


def test_apply_update_steps_or_skips_and_counts():
    ctx = RunContext(cpu_runtime())
    weight = torch.nn.Parameter(torch.ones(2))
    state = _state(weight, ctx)
    (weight * 3).sum().backward()
    status, (norm,) = apply_update(ctx, state, [[weight]], torch.tensor(1.0), OptimConfig(max_grad_norm=0),
                                   stage="t", step=1, checkpointer=None)
    assert status == APPLIED and float(norm) == pytest.approx(math.sqrt(18))
    assert ctx.budget.steps == 1 and weight.grad is None and not torch.equal(weight.detach(), torch.ones(2))
    before = weight.detach().clone()
    (weight * 3).sum().backward()
    status, _ = apply_update(ctx, state, [[weight]], torch.tensor(float("nan")),
                             OptimConfig(skip_nonfinite=True),
                             stage="t", step=2, checkpointer=None)
    assert status == SKIPPED and ctx.budget.nonfinite_skipped == 1 and ctx.budget.steps == 1
    assert torch.equal(weight.detach(), before) and weight.grad is None  # no update, gradients cleared
    (weight * 3).sum().backward()
    with pytest.raises(NumericalError, match="t: step 3: loss is nan; no checkpoint yet"):
        apply_update(ctx, state, [[weight]], torch.tensor(float("nan")), OptimConfig(), stage="t", step=3,
                     checkpointer=None)


def test_fit_logs_the_mean_of_the_steps_since_the_last_record():
    log = MetricsLog(None)
    ctx = RunContext(cpu_runtime(), log)
    weight = torch.nn.Parameter(torch.zeros(1))
    seen = []

    def step(index):
        loss = ((weight - 1.0) ** 2).sum()
        seen.append(float(loss.detach()))
        return loss, {}

    records = fit(ctx, [weight], [[0]] * 5, step, TrainingConfig(lr=0.1, warmup_steps=0, log_every=2,
                                                                  max_grad_norm=0), stage="toy")
    assert [r["step"] for r in log.records] == [2, 4, 5] and ctx.budget.steps == 5
    assert records[0]["loss"] == pytest.approx((seen[0] + seen[1]) / 2)
    assert records[2]["loss"] == pytest.approx(seen[4])
    assert seen[4] < seen[0]  # it trained


def test_training_loop_resumes_after_its_last_checkpoint_with_its_extras(tmp_path):
    weight = torch.nn.Parameter(torch.zeros(1))
    ctx = RunContext(cpu_runtime(), MetricsLog(None), checkpointer=Checkpointer(tmp_path / "ckpt"))
    state = _state(weight, ctx)
    done = []

    def body(step):
        if step == 4:
            raise KeyboardInterrupt  # killed during step 4
        with torch.no_grad():
            weight.add_(step)
        done.append(step)
        return {"value": float(weight.detach())}

    loop = TrainingLoop(ctx, "toy", state, 5, checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):
        loop.run(body, lambda: {"done": list(done)})
    assert done == [1, 2, 3]
    with torch.no_grad():
        weight.zero_()  # a new process starts from scratch ...
    ctx2 = RunContext(cpu_runtime(), MetricsLog(None), checkpointer=Checkpointer(tmp_path / "ckpt"))
    resumed = TrainingLoop(ctx2, "toy", _state(weight, ctx2), 5, checkpoint_every=3)
    assert resumed.start == 3 and resumed.restored == {"done": [1, 2, 3]}  # ... and continues after step 3
    assert float(weight) == 6.0
    other = TrainingLoop(RunContext(cpu_runtime(), checkpointer=ctx2.checkpointer), "another stage",
                         _state(weight, ctx2), 5, checkpoint_every=3)
    # the first loop of the run claimed the checkpoints
    assert other.checkpointer is None and other.start == 0
