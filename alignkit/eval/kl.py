"""KL(pi || pi_ref) between the distributions the evaluator actually samples from.

At temperature T and nucleus top_p the samples come from the *processed* policy, so the KL reported next
to them is taken between the processed policy and the reference processed the same way. The processing
reproduces transformers' ``generate`` with :func:`alignkit.models.policy.sampling_config` exactly: the
float32 logits are divided by T (``TemperatureLogitsWarper``), then cut to the nucleus
(``TopPLogitsWarper``), in that order, and sampled from their softmax.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from alignkit.runtime import Runtime

CHUNK_ROWS = 64


def _check_settings(temperature: float, top_p: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}: greedy decoding (T = 0) has no "
                         "sampling distribution to take a KL of")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _nucleus(scores: Tensor, top_p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """transformers' ``TopPLogitsWarper.__call__`` on the last dim of ``scores`` [..., V]: drop the tokens
    whose ascending cumulative probability is <= 1 - top_p, keeping the ``min_tokens_to_keep`` largest;
    same sort call (ascending, not stable), so ties break as they do in ``generate``."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - top_p)
    sorted_indices_to_remove[..., -min_tokens_to_keep:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(-1, sorted_indices, sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, -float("inf"))


def sampling_logprobs(logits: Tensor, temperature: float, top_p: float) -> Tensor:
    """Log-probabilities [..., V] (float32, -inf outside the nucleus) of the next-token distribution that
    ``generate`` samples from under ``sampling_config``: float32 logits / T, then the top-p warper (skipped
    at top_p = 1, as generate does), then softmax."""
    _check_settings(temperature, top_p)
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        scores = _nucleus(scores, top_p)
    return torch.log_softmax(scores, dim=-1)


def sampled_distribution_kl(logits: Tensor, ref_logits: Tensor, temperature: float, top_p: float) -> Tensor:
    """Exact KL(p || q) per position [..., V] -> [...] between the processed next-token distributions of the
    policy (p) and the reference (q). Tokens outside p's nucleus contribute 0; a token in p's nucleus but
    outside q's makes the KL +inf (the processed reference cannot produce it). At T = 1, top_p = 1 this is
    ``alignkit.rl.ops.full_kl_from_logits`` (without its clamp at 0)."""
    logp = sampling_logprobs(logits, temperature, top_p)
    logq = sampling_logprobs(ref_logits, temperature, top_p)
    support = logp > -float("inf")
    # on p's support logp is finite, so the only infinity in logp - logq is +inf where q = 0
    terms = torch.where(support, logp.exp() * (logp - logq), torch.zeros_like(logp))
    kl = terms.sum(-1)
    excluded = (support & (logq == -float("inf"))).any(-1)  # p > 0 = q, also when exp(logp) underflows to 0
    return kl.masked_fill(excluded, float("inf"))


def sequence_kl(policy, reference, rollout, runtime: Runtime, temperature: float = 1.0,
                top_p: float = 1.0) -> np.ndarray:
    """Per-sample sequence KL [B] (float64) between the processed policy and processed reference: the exact
    per-token :func:`sampled_distribution_kl` summed over the completion tokens (EOS included) of each
    sampled row. Its mean over samples drawn at the same (T, top_p) is an unbiased estimate of the sequence
    KL (chain rule), and it is never negative. Rows are scored in chunks of 64 to bound memory, shared out
    between ``runtime``'s processes."""
    _check_settings(temperature, top_p)

    batch = rollout.batch

    @torch.no_grad()
    def chunk_kl(_, start: int) -> torch.Tensor:
        part = batch.select(slice(start, start + CHUNK_ROWS))
        _, logits = policy.token_logprobs(part, return_logits=True)
        _, ref_logits = reference.token_logprobs(part, return_logits=True)
        mask = part.target_mask.to(logits.device) > 0  # [b, T-1]
        rows = torch.nonzero(mask, as_tuple=True)[0]
        # only completion positions: prompt and padding positions never enter the sum
        kl = sampled_distribution_kl(logits[mask], ref_logits[mask], temperature, top_p).double()
        return torch.zeros(mask.shape[0], dtype=torch.float64, device=kl.device).index_add_(0, rows, kl).cpu()

    # chunks shared out between processes
    out = runtime.map_chunks(chunk_kl, range(0, len(batch), CHUNK_ROWS))
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).numpy()
