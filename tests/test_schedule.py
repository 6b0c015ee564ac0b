"""Learning-rate schedules (alignkit.schedule): each shape at hand-computed steps, trl's shapes equal to
transformers' own schedulers step for step, transformers' warm-up length, and the optimiser running them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from alignkit.schedule import TRL_SCHEDULES, multiplier, warmup_length
from alignkit.training import make_optimizer


def shape(schedule: str, warmup: int, total: int, steps) -> list[float]:
    return [multiplier(s, schedule=schedule, warmup=warmup, total=total) for s in steps]


def test_the_default_warms_up_from_above_zero_and_decays_to_a_tenth():
    # warm-up (step + 1) / 5 over 4 steps; then 1 - 0.9 x progress over the 10 steps left, floored at 0.1
    assert shape("linear_to_tenth", 4, 14, [0, 3, 4, 9, 14, 40]) == pytest.approx(
        [0.2, 0.8, 1.0, 0.55, 0.1, 0.1])


def test_linear_and_cosine_end_at_zero():
    assert shape("linear", 0, 10, [0, 5, 10, 12]) == pytest.approx([1.0, 0.5, 0.0, 0.0])
    # trl's warm-up starts from 0
    assert shape("linear", 2, 12, [0, 1, 2, 7]) == pytest.approx([0.0, 0.5, 1.0, 0.5])
    # half a cosine over the 10 steps after warm-up: 1 at its start, 0.5 half-way, 0 at the end
    assert shape("cosine", 2, 12, [2, 7, 12]) == pytest.approx([1.0, 0.5, 0.0])
    assert multiplier(2, schedule="cosine", warmup=0, total=8) == pytest.approx((1 + math.sqrt(0.5)) / 2)


def test_constants():
    assert shape("constant_with_warmup", 4, 10, [0, 2, 4, 9, 100]) == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert shape("constant", 4, 10, [0, 2, 100]) == [1.0, 1.0, 1.0]  # no warm-up, as in transformers


@pytest.mark.parametrize("schedule", TRL_SCHEDULES)
def test_trl_shapes_are_transformers_own(schedule):
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=3, num_training_steps=17)
    theirs = []
    for _ in range(20):
        theirs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert shape(schedule, 3, 17, range(20)) == pytest.approx(theirs, abs=1e-12)


def test_warmup_length_is_transformers_rule():
    from transformers import TrainingArguments

    def theirs(steps: float, total: int) -> int:
        return TrainingArguments.get_warmup_steps(SimpleNamespace(warmup_steps=steps), total)

    assert warmup_length(95, 0, 0.1) == theirs(0.1, 95) == 10  # 9.5 rounded up
    assert warmup_length(95, 7, 0.0) == theirs(7, 95) == 7
    assert warmup_length(95, 0, 0.0) == theirs(0, 95) == 0


def test_the_optimiser_follows_the_schedule_and_its_constant_tail():
    def rates(**kwargs) -> list[float]:
        optimizer, scheduler = make_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=0.1, **kwargs)
        out = []
        for _ in range(6):
            optimizer.step()
            scheduler.step()
            out.append(scheduler.get_last_lr()[0])  # what fit() records after each step
        return out

    assert rates(total_steps=4, schedule="linear") == pytest.approx([0.075, 0.05, 0.025, 0.0, 0.0, 0.0])
    assert rates(total_steps=4, schedule="linear", tail_after=4) == pytest.approx(
        [0.075, 0.05, 0.025, 0.1, 0.1, 0.1])  # --until-converged: the peak rate after the schedule's span
    assert rates(total_steps=4) == pytest.approx([0.0775, 0.055, 0.0325, 0.01, 0.01, 0.01])
