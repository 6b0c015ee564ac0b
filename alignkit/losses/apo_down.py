"""APO-down (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
Eq. 8): for chosen outputs worse than the model's own, lower both likelihoods, the rejected one more."""

import torch

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("apo_down")
def apo_down_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """sig(r_c) + (1 - sig(r_c - r_r)), r = beta * log(pi / pi_ref) per response.
    Equals trl 1.16's ``apo_down``."""
    chosen, rejected = log_ratios(logps)
    losses = torch.sigmoid(beta * chosen) + (1 - torch.sigmoid(beta * (chosen - rejected)))
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
