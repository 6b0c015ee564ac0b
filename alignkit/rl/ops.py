"""Pure PPO math on padded token batches.

Conventions: ``B`` = batch, ``T`` = completion length, ``V`` = vocab. ``mask`` is a float/bool
``[B, T]`` tensor with 1 on real completion tokens and 0 on padding (per row ``1..1 0..0``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1 (all dims, or along ``dim``).

    Padding must not dilute statistics, so masked-out entries are excluded from numerator and count.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Scalar variance of ``values`` over masked entries (Bessel-corrected if ``unbiased``)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.to(values.dtype).sum()
        if n <= 1:
            raise ValueError("unbiased masked_var needs at least two unmasked entries")
        var = var * n / (n - 1)
    return var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise to unit variance (and zero mean if ``shift_mean``) using masked statistics only.

    Used on advantages so the step size is independent of reward scale; padded entries come back as 0.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def per_token_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 KL estimator ``log p - log p_ref`` per sampled token, ``[B, T]`` (unbiased, can be negative)."""
    return logprobs - ref_logprobs


def token_rewards(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """InstructGPT shaping: ``-kl_coef * KL`` at every completion token plus ``scores[B]`` on the last one.

    Returns ``(rewards [B, T], kl [B, T])``, both zero where ``mask`` is 0.
    """
    mask = mask.to(logprobs.dtype)
    kl = per_token_kl(logprobs, ref_logprobs) * mask
    rewards = -kl_coef * kl
    # Index of the last 1 in each row: argmax over (position * mask) picks the highest masked position.
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).argmax(dim=1)
    has_tokens = mask.sum(dim=1) > 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += scores.to(rewards.dtype) * has_tokens
    return rewards, kl


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016), computed backwards over ``T``.

    The episode ends at the last masked token, so the bootstrap value past it is 0 and padding
    never leaks in. Returns ``(advantages, returns = advantages + values)``, ``[B, T]``, zero on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(values[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]
        advantages[:, t] = last_gae
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, dict]:
    """PPO clipped surrogate (Schulman et al. 2017): pessimistic max of unclipped/clipped ``-A * ratio``.

    All inputs ``[B, T]``; returns a scalar loss and detached stats ``clipfrac`` and ``approx_kl``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio**2, mask).detach(),
    }
    return loss, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, dict]:
    """Clipped value loss: keeps the critic within ``clip_range`` of its rollout-time values, ``[B,
    T]`` inputs."""
    clipped_values = torch.clamp(values, old_values - clip_range, old_values + clip_range)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    return loss, {"value_clipfrac": masked_mean((clipped_err > unclipped_err).float(), mask).detach()}


def full_kl_from_logits(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(pi(.|s_t) || pi_ref(.|s_t)) at every position [..., V] -> [...]; summed over a sampled
    completion it estimates the sequence KL without the sign noise of log pi - log pi_ref (always >= 0)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1).clamp(min=0.0)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last dim, ``[..., V] -> [...]`` (numerically stable)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): nudges ``value`` so the measured KL tracks
    ``target_kl``.

    With ``target_kl=None`` the coefficient stays fixed.
    """

    def __init__(self, init_kl_coef: float, target_kl: float | None, horizon: int):
        self.value = float(init_kl_coef)
        self.target_kl = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Multiply ``value`` by ``1 + clip(kl/target - 1, -0.2, 0.2) * n_steps / horizon``."""
        if self.target_kl is None:
            return
        proportional_error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
