"""DiscoPOP (Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large
Language Models", Eq. 5): the LLM-discovered log-ratio-modulated loss, a logistic/exponential blend."""

import torch
import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("discopop", bounds={"tau": {"gt": 0.0}})
def discopop_loss(logps: PreferenceLogps, *, beta: float, tau: float = 0.05) -> LossOutput:
    """(1 - w) * -log sig(beta m) + w * exp(-beta m), w = sig(beta m / tau), m the log-ratio margin.

    ``tau`` is trl's ``discopop_tau`` (default 0.05, the paper's). Equals trl 1.16's ``discopop`` with its
    default ``f_divergence_type='reverse_kl'``."""
    chosen, rejected = log_ratios(logps)
    logits = beta * (chosen - rejected)
    weight = torch.sigmoid(logits / tau)
    losses = -F.logsigmoid(logits) * (1 - weight) + torch.exp(-logits) * weight
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
