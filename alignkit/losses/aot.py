"""AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport"):
first-order stochastic dominance of the policy's margins over the reference's, via sorting the batch."""

import torch
import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("aot", bounds={"label_smoothing": {"ge": 0.0, "le": 0.5}})
def aot_loss(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """-(1-eps) log sig(beta d_k) - eps log sig(-beta d_k), d = sort(log pi(y_c) - log pi(y_r)) -
    sort(log pi_ref(y_c) - log pi_ref(y_r)), each sorted ascending over the batch.

    Batch-level, as in trl: the k-th loss pairs the k-th smallest policy margin with the k-th smallest
    reference margin, so ``losses[k]`` is *not* the loss of pair k (only the mean is meaningful, and it
    depends on which pairs share a batch). Reference-free: the reference margins are 0. The implicit
    rewards are per pair, unsorted. Equals trl 1.16's ``aot``."""
    policy_margin = logps.policy_chosen - logps.policy_rejected
    if logps.reference_chosen is None:
        reference_margin = torch.zeros_like(policy_margin)
    else:
        reference_margin = logps.reference_chosen - logps.reference_rejected
    delta = torch.sort(policy_margin, dim=0).values - torch.sort(reference_margin, dim=0).values
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(
        -beta * delta
    )
    chosen, rejected = log_ratios(logps)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
