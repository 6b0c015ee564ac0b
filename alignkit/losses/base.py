"""What every preference loss takes and returns.

A loss is a pure function ``loss(logps: PreferenceLogps, *, beta, **params) -> LossOutput`` registered
with ``@register_loss(name)``. It sees only per-sequence log-probs (no model, no trainer), so it can be
unit-tested with hand-computed numbers and swapped without touching the training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from alignkit.config import bound_problem
from alignkit.signatures import loss_parameters  # noqa: F401  (re-exported: part of the loss API)


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


def param_problem(name: str, value: Any, default: Any, bounds: dict) -> str | None:
    """Why a ``loss_params`` value cannot be used: its type differs from the default's, a number is not
    finite, or it lies outside the bounds the loss declared (``register_loss(name, bounds={...})``)."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) != isinstance(value, bool) and default is not None:
            return f"expected {'true or false' if isinstance(default, bool) else 'a number'}, got {value!r}"
    elif isinstance(default, (int, float)):
        if not isinstance(value, (int, float)):
            return f"expected a number, got {type(value).__name__} {value!r}"
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
    elif isinstance(default, str) and not isinstance(value, str):
        return f"expected a string, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return bound_problem(value, bounds.get(name, {}))


def synthetic_logps(reference: bool, batch: int = 3) -> PreferenceLogps:
    """A tiny batch of plausible summed log-probs (policy ones require grad), for the dry call."""
    policy_chosen = torch.tensor([-5.0, -7.5, -6.0][:batch], requires_grad=True)
    policy_rejected = torch.tensor([-6.0, -7.0, -9.0][:batch], requires_grad=True)
    ref_chosen = torch.tensor([-5.5, -7.0, -6.5][:batch]) if reference else None
    ref_rejected = torch.tensor([-5.8, -7.2, -8.0][:batch]) if reference else None
    lengths = torch.tensor([4, 6, 5][:batch])
    return PreferenceLogps(policy_chosen, policy_rejected, ref_chosen, ref_rejected, lengths, lengths.clone())


def contract_problem(loss: Callable, beta: float, params: dict) -> str | None:
    """Call ``loss`` on a synthetic batch of 3 pairs, with and without a reference, and say what breaks
    the contract: an exception (a ValueError is the loss refusing its parameters), a result that is not
    a :class:`LossOutput`, tensors not of shape [3], non-finite values, or losses without a gradient."""
    for reference in (True, False):
        where = "" if reference else " (reference-free)"
        try:
            out = loss(synthetic_logps(reference), beta=beta, **params)
        except ValueError as exc:
            return str(exc)
        except Exception as exc:  # a plugin's own bug, reported in one line
            return f"failed on a test batch{where}: {type(exc).__name__}: {exc}"
        if not isinstance(out, LossOutput):
            return ("must return a LossOutput(losses, chosen_rewards, rejected_rewards), got "
                    f"{type(out).__name__}")
        for field in ("losses", "chosen_rewards", "rejected_rewards"):
            value = getattr(out, field)
            if not isinstance(value, Tensor) or tuple(value.shape) != (3,):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                return (f"LossOutput.{field} must be a per-pair tensor of shape [B] (B = 3 here), got "
                        f"{shape}{where}")
            if not torch.isfinite(value).all():
                return f"LossOutput.{field} is not finite on a test batch{where}: {value.tolist()}"
        if not out.losses.requires_grad:
            return f"LossOutput.losses does not depend on logps (no gradient){where}"
    return None
