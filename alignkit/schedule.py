"""Learning-rate schedules as pure functions: the fraction of the peak rate at each optimiser step.

``linear_to_tenth`` is alignkit's own and the default: warm-up ``(step + 1) / (warmup + 1)`` (no step at rate
0), then linear decay to a tenth of the peak. The others are trl's ``lr_scheduler_type`` with transformers'
multipliers step for step, so a DPO run here and a GRPO run in trl's trainer follow the same curve: warm-up
``step / warmup`` from 0, then ``linear`` decay to 0, half a ``cosine`` to 0, or the peak held
(``constant_with_warmup``); ``constant`` has no warm-up at all. The warm-up length follows transformers'
``TrainingArguments.get_warmup_steps`` (:func:`warmup_length`).
"""

from __future__ import annotations

import math
from typing import Callable

DEFAULT = "linear_to_tenth"
# after warm-up: the multiplier at progress p (0 at the end of warm-up, 1 at the last scheduled step)
DECAY: dict[str, Callable[[float], float]] = {
    DEFAULT: lambda p: max(0.1, 1.0 - 0.9 * p),
    "linear": lambda p: max(0.0, 1.0 - p),
    "cosine": lambda p: max(0.0, 0.5 * (1.0 + math.cos(math.pi * p))),
    "constant": lambda p: 1.0,
    "constant_with_warmup": lambda p: 1.0,
}
SCHEDULES = tuple(DECAY)
TRL_SCHEDULES = SCHEDULES[1:]  # what trl's own trainers (GRPO, RLOO) take
NO_WARMUP = "constant"  # transformers' constant schedule ignores any warm-up


def multiplier(step: int, *, schedule: str, warmup: int, total: int) -> float:
    """The fraction of the peak rate for optimiser step ``step`` (0-based) of a schedule spanning ``total``
    steps, the first ``warmup`` of them warming up."""
    if step < warmup and schedule != NO_WARMUP:
        return (step + 1) / (warmup + 1) if schedule == DEFAULT else step / warmup
    return DECAY[schedule]((step - warmup) / max(1, total - warmup))


def warmup_length(total: int, steps: int, ratio: float) -> int:
    """Warm-up steps of a schedule spanning ``total``: ``steps``, or with none, ``ratio`` of ``total`` rounded
    up (transformers' rule; giving both is refused at load, see :func:`schedule_problems`)."""
    return steps if steps > 0 else math.ceil(total * ratio)


def warmup_from_aliases(data: dict) -> dict:
    """A method section's warm-up as trl writes it: ``warmup_steps`` below 1 is a ratio (transformers 5),
    and a ratio (or trl's ``constant`` schedule, which has none) given without ``warmup_steps`` replaces
    alignkit's default warm-up steps (trl's default is 0)."""
    steps = data.get("warmup_steps")
    if isinstance(steps, float) and 0 < steps < 1 and "warmup_ratio" not in data:
        data["warmup_ratio"] = data.pop("warmup_steps")
    schedule = data.get("lr_schedule", data.get("lr_scheduler_type"))
    if "warmup_steps" not in data and (data.get("warmup_ratio") or schedule == NO_WARMUP):
        data["warmup_steps"] = 0
    return data


def schedule_problems(schedule: str, steps: int, ratio: float):
    """(key, problem) of a warm-up that would be ignored: both a step count and a ratio, or any with the
    ``constant`` schedule."""
    if steps > 0 and ratio > 0:
        yield "warmup_ratio", f"warmup_steps ({steps}) is also given; give one (or warmup_steps: 0)"
    elif schedule == NO_WARMUP and (steps > 0 or ratio > 0):
        which = f"warmup_steps: {steps}" if steps > 0 else f"warmup_ratio: {ratio}"
        yield "lr_schedule", f"constant has no warm-up ({which} is given): use constant_with_warmup"
