"""APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
Eq. 7): for chosen outputs better than the model's own, raise chosen and lower rejected likelihood."""

import torch

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("apo_zero")
def apo_zero_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """(1 - sig(r_c)) + sig(r_r), r = beta * log(pi / pi_ref) per response (anchored at 0).
    Equals trl 1.16's ``apo_zero``."""
    chosen, rejected = log_ratios(logps)
    losses = (1 - torch.sigmoid(beta * chosen)) + torch.sigmoid(beta * rejected)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
