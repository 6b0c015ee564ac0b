"""Unlikelihood training's loss (Welleck et al. 2019), the DPO paper's Unlikelihood baseline (Rafailov et
al. 2023, sec. 6 and Fig. 2): likelihood on the chosen completion, unlikelihood log(1 - p) on every rejected
token.

Unlike the DPO-family losses in the loss registry it needs per-token log-probs (log(1 - p) does not
factor over a sequence) and has no ``beta``, so it is not registered there; the ``unlikelihood`` method
imports it directly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# 1 - p is floored at this value, i.e. log p is capped at log(1 - MIN_ONE_MINUS_P) (the floor of Welleck
# et al.'s reference code). Without it a token the model is certain of (log p = 0 exactly, p = 1) gives
# -log(1 - p) = inf, and the gradient p / (1 - p) grows without bound as p -> 1. With it one token adds at
# most -log(1e-5) = 11.5 nats, and a rejected token with p > 1 - 1e-5 gets no unlikelihood gradient.
MIN_ONE_MINUS_P = 1e-5
MAX_LOGP = math.log1p(-MIN_ONE_MINUS_P)
LN2 = math.log(2.0)


def log1mexp(logp: Tensor) -> Tensor:
    """log(1 - exp(logp)) for logp < 0, accurate for every logp (Maechler 2012): log(-expm1(logp)) near 0,
    where 1 - exp(logp) would cancel catastrophically, and log1p(-exp(logp)) below -ln 2. Not clamped."""
    # each branch only sees inputs where it is finite, so neither leaks a nan/inf into the other's gradient
    near_zero = logp > -LN2
    return torch.where(near_zero, torch.log(-torch.expm1(torch.where(near_zero, logp, -LN2))),
                       torch.log1p(-torch.exp(torch.where(near_zero, -LN2, logp))))


def unlikelihood_loss(chosen_token_logps: Tensor, chosen_mask: Tensor, rejected_token_logps: Tensor,
                      rejected_mask: Tensor, *, alpha: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair losses [B]: -mean_t log p(y_w,t) - alpha * mean_t log(1 - p(y_l,t)), token means over each
    completion's own tokens (masks [B, T], 1 at completion tokens; log-probs [B, T], any value elsewhere).

    Metrics (detached, batch means): ``nll/chosen`` and ``unlikelihood/rejected`` are the two per-token terms
    (loss = nll/chosen + alpha * unlikelihood/rejected), ``logps/chosen`` and ``logps/rejected`` the summed
    completion log-probs. log(1 - p) is computed with :func:`log1mexp` and clamped at ``MIN_ONE_MINUS_P``.
    """
    chosen_mask = chosen_mask.to(chosen_token_logps.dtype)
    rejected_mask = rejected_mask.to(rejected_token_logps.dtype)
    chosen_lengths = chosen_mask.sum(-1).clamp(min=1)  # an empty completion contributes 0, not nan
    rejected_lengths = rejected_mask.sum(-1).clamp(min=1)
    nll = -(chosen_token_logps * chosen_mask).sum(-1) / chosen_lengths
    # padding positions may hold log p = 0 (p = 1): clamped to a finite value, then masked out
    log_one_minus_p = log1mexp(rejected_token_logps.clamp(max=MAX_LOGP))
    unlikelihood = -(log_one_minus_p * rejected_mask).sum(-1) / rejected_lengths
    losses = nll + alpha * unlikelihood
    metrics = {
        "nll/chosen": nll.detach().mean(),
        "unlikelihood/rejected": unlikelihood.detach().mean(),
        "logps/chosen": (chosen_token_logps * chosen_mask).sum(-1).detach().mean(),
        "logps/rejected": (rejected_token_logps * rejected_mask).sum(-1).detach().mean(),
    }
    return losses, metrics
