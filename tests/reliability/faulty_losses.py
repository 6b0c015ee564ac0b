"""Test plugin (loaded with --plugins): preference losses that are slow or fail on purpose, and a slow gold
reward a tiny policy can learn."""

import math
import time

import numpy as np

from alignkit.registry import LOSSES, REWARDS, register_loss, register_reward


@register_loss("zz_slow_loss")
def zz_slow_loss(logps, *, beta):
    """DPO's loss, 0.15 s slower per step: a window to kill a run between two checkpoints."""
    time.sleep(0.15)
    return LOSSES.get("sigmoid")(logps, beta=beta)


@register_loss("zz_nan_loss")
def zz_nan_loss(logps, *, beta, calls: tuple = (2, 3)):
    """DPO's loss, but NaN on the given (1-based) training calls; ``zz_nan_loss.count`` counts them.
    Batches of fewer than 4 pairs (alignkit's own check of a loss, at recipe load) are left alone."""
    out = LOSSES.get("sigmoid")(logps, beta=beta)
    if len(logps.policy_chosen) < 4:
        return out
    zz_nan_loss.count += 1
    if zz_nan_loss.count in calls:
        out.losses = out.losses * math.nan
    return out


zz_nan_loss.count = 0


if "zz_slow_letter_e" not in REWARDS:
    @register_reward("zz_slow_letter_e")
    def zz_slow_letter_e(workspace):
        """Share of the letter e in a completion, 0.1 s slower per call: GRPO/RLOO need no reward model with
        it, and a run can be killed between two checkpoints."""
        def score(prompts, completions):
            time.sleep(0.1)
            return np.array([c.count("e") / max(1, len(c)) for c in completions])
        return score
