"""DPO's loss (Rafailov et al. 2023, Eq. 7), with optional label smoothing (conservative DPO)."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("sigmoid", bounds={"label_smoothing": {"ge": 0.0, "le": 0.5}})
def sigmoid_loss(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """-log sigmoid(beta * margin); label_smoothing eps assumes labels flipped with probability eps (cDPO)."""
    chosen, rejected = log_ratios(logps)
    margin = beta * (chosen - rejected)
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
