"""The hinge (SLiC-style) preference loss: a margin of 1/beta in log-ratio space, then no more push."""

import torch

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("hinge")
def hinge_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """max(0, 1 - beta * margin): zero once the chosen log-ratio leads by 1/beta."""
    chosen, rejected = log_ratios(logps)
    losses = torch.relu(1 - beta * (chosen - rejected))
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
