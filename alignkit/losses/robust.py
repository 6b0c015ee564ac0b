"""Robust DPO (Chowdhury et al. 2024): an unbiased loss when labels are flipped with probability eps."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("robust", bounds={"label_smoothing": {"ge": 0.0, "lt": 0.5}})
def robust_loss(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """[(1-eps) * -log sig(beta m) - eps * -log sig(-beta m)] / (1 - 2 eps); eps = label_smoothing < 0.5."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust loss: label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    chosen, rejected = log_ratios(logps)
    margin = beta * (chosen - rejected)
    losses = (-(1 - label_smoothing) * F.logsigmoid(margin)
              + label_smoothing * F.logsigmoid(-margin)) / (1 - 2 * label_smoothing)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
