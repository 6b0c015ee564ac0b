"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"): a loss on
unpaired completions, each only labelled desirable or not, valued against a reference point z0 = an
estimate of KL(pi || pi_ref). Not a pairwise loss, so it is not in the preference-loss registry; the
``kto`` method (alignkit/methods/kto.py) uses it."""

from __future__ import annotations

import torch
from torch import Tensor


def kl_reference_point(policy_mismatched: Tensor, reference_mismatched: Tensor) -> Tensor:
    """z0: the batch mean of log pi - log pi_ref over mismatched (prompt, completion) pairs, clamped at 0
    and detached (the paper does not back-propagate through it), as trl 1.16 computes it."""
    return (policy_mismatched - reference_mismatched).mean().detach().clamp(min=0)


def kto_loss(policy_logps: Tensor, reference_logps: Tensor, desirable: Tensor, kl: Tensor, *, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-example losses [B] and implicit rewards beta * log(pi / pi_ref) [B] (detached), paper Eq. 7:
    w_D * (1 - sig(beta * (r - z0))) for a desirable completion, w_U * (1 - sig(beta * (z0 - r))) for an
    undesirable one, with r = log pi(y|x) - log pi_ref(y|x). Equals trl 1.16's ``loss_type='kto'``."""
    ratio = policy_logps - reference_logps
    value = torch.where(desirable, torch.sigmoid(beta * (ratio - kl)), torch.sigmoid(beta * (kl - ratio)))
    weight = torch.where(desirable, torch.full_like(ratio, desirable_weight), torch.full_like(ratio,
                                                                                              undesirable_weight))
    return weight * (1 - value), beta * ratio.detach()
