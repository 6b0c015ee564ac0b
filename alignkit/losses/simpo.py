"""SimPO (Meng et al. 2024, "Simple Preference Optimization with a Reference-Free Reward"): the implicit
reward is the policy's length-normalised log-likelihood, beta/|y| log pi(y|x), and the Bradley-Terry margin
must exceed a target gamma. No reference model is loaded or scored."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps
from alignkit.registry import register_loss


def average_logps(logps: PreferenceLogps):
    """The policy's mean log-prob per completion token, chosen and rejected (lengths of at least 1)."""
    return (logps.policy_chosen / logps.chosen_lengths.clamp(min=1),
            logps.policy_rejected / logps.rejected_lengths.clamp(min=1))


@register_loss("simpo", uses_reference=False, bounds={"gamma": {"ge": 0.0},
                                                      "label_smoothing": {"ge": 0.0, "lt": 0.5}})
def simpo_loss(logps: PreferenceLogps, *, beta: float, gamma: float = 0.5,
               label_smoothing: float = 0.0) -> LossOutput:
    """-log sig(beta/|y_c| log pi(y_c) - beta/|y_r| log pi(y_r) - gamma) (paper Eq. 6); label_smoothing eps
    mixes in the flipped label as in cDPO. The reference log-probs are ignored. Equals trl 1.16's
    experimental CPO ``loss_type='simpo'`` with ``cpo_alpha=0`` (trl's simpo_gamma = gamma)."""
    chosen, rejected = average_logps(logps)
    logits = beta * (chosen - rejected) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return LossOutput(losses, beta * chosen.detach(), beta * rejected.detach())
