"""NCA, pairwise form (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit
Rewards"): each response's own implicit reward is pushed, not only the margin, so the chosen likelihood
is not dragged down with the rejected one."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("nca_pair")
def nca_pair_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """-log sig(r_c) - 0.5 log sig(-r_c) - 0.5 log sig(-r_r), with r = beta * log(pi / pi_ref) per response.
    Equals trl 1.16's ``nca_pair``."""
    chosen, rejected = log_ratios(logps)
    r_chosen, r_rejected = beta * chosen, beta * rejected
    losses = -F.logsigmoid(r_chosen) - 0.5 * F.logsigmoid(-r_chosen) - 0.5 * F.logsigmoid(-r_rejected)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
