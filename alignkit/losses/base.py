"""What every preference loss takes and returns.

A loss is a pure function ``loss(logps: PreferenceLogps, *, beta, **params) -> LossOutput`` registered
with ``@register_loss(name)``. It sees only per-sequence log-probs (no model, no trainer), so it can be
unit-tested with hand-computed numbers and swapped without touching the training code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor


@dataclass
class PreferenceLogps:
    """Summed completion log-probs [B] of the policy and the reference (None when reference-free),
    plus completion lengths in tokens, for losses that normalise by length."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Optional[Tensor]
    reference_rejected: Optional[Tensor]
    chosen_lengths: Tensor
    rejected_lengths: Tensor


@dataclass
class LossOutput:
    """Per-pair losses [B] and the implicit rewards beta * log(pi / pi_ref) [B] (detached), for logging."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def log_ratios(logps: PreferenceLogps) -> tuple[Tensor, Tensor]:
    """log pi(y|x) - log pi_ref(y|x) for chosen and rejected; pi_ref = 1 when reference-free."""
    if logps.reference_chosen is None:
        return logps.policy_chosen, logps.policy_rejected
    return logps.policy_chosen - logps.reference_chosen, logps.policy_rejected - logps.reference_rejected


def implicit_rewards(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """DPO's implicit reward r = beta * log(pi / pi_ref), detached: it is logged, not optimised."""
    return beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def loss_parameters(loss: Callable) -> dict[str, object]:
    """The extra keyword parameters a loss accepts (beyond ``logps`` and ``beta``), with defaults."""
    params = inspect.signature(loss).parameters
    return {name: p.default for name, p in params.items()
            if name not in ("logps", "beta") and p.kind is inspect.Parameter.KEYWORD_ONLY}
