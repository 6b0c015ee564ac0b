"""Token sequences of prompt + completion, and log-probabilities over the completion tokens only.

Every method scores sequences through these functions, so DPO, PPO, the reward model and the evaluator
agree on masking, padding and positions. A :class:`SequenceBatch` may be left-padded (rollouts from
``generate``) or right-padded (text pairs); positions come from the attention mask either way, exactly
as ``generate`` computes them, so a sampled token's log-prob is the one it was sampled with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor


@dataclass
class SequenceBatch:
    """``input_ids``/``attention_mask`` [B, T]; ``completion_mask`` [B, T] is 1 at completion tokens."""

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def select(self, index: Tensor | slice | list[int]) -> "SequenceBatch":
        return SequenceBatch(*(getattr(self, f.name)[index] for f in fields(self)))

    @property
    def target_mask(self) -> Tensor:
        """Mask aligned with next-token predictions [B, T-1]: which predicted tokens are completion tokens."""
        return self.completion_mask[:, 1:].to(torch.float32)

    @property
    def completion_lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def concat_batches(batches: list[SequenceBatch], pad_token_id: int) -> SequenceBatch:
    """Stack batches of different widths along the batch axis, padding on the right."""
    width = max(b.input_ids.shape[1] for b in batches)

    def pad(t: Tensor, value: int) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return SequenceBatch(
        torch.cat([pad(b.input_ids, pad_token_id) for b in batches]),
        torch.cat([pad(b.attention_mask, 0) for b in batches]),
        torch.cat([pad(b.completion_mask, 0) for b in batches]),
    )


def encode_pairs(tokenizer, prompts: list[str], completions: list[str], *, max_length: int,
                 max_prompt_length: int | None = None,
                 append_eos: bool | Sequence[bool] = False) -> SequenceBatch:
    """Tokenize prompt and completion separately and join them, right-padded.

    The prompt is cut once, to its last ``max_prompt_length`` tokens (default ``max_length // 2``),
    whatever completion follows it, so a prompt's chosen and rejected completions always see the same
    prompt ids; the completion then keeps its first ``max_length - len(prompt)`` tokens. ``append_eos``
    (one flag, or one per row) appends EOS to a completion, e.g. exactly where the sampler stopped.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    eos_flags = [append_eos] * len(prompts) if isinstance(append_eos, bool) else list(append_eos)
    if len(eos_flags) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(eos_flags)} EOS flags")
    prompt_limit = max(1, max_prompt_length if max_prompt_length is not None else max_length // 2)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    rows = []
    for p, c, eos in zip(prompt_ids, completion_ids, eos_flags):
        p = p[-prompt_limit:]
        c = (c + [tokenizer.eos_token_id] if eos else c)[: max_length - len(p)]
        rows.append((p, c))
    width = max(len(p) + len(c) for p, c in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c, dtype=torch.long)
        attention[i, :n] = 1
        completion[i, len(p):n] = 1
    return SequenceBatch(input_ids, attention, completion)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, as ``generate`` does for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward(model, batch: SequenceBatch):
    """Run a causal LM (or a model with the same call signature) on a batch with mask-derived positions."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 position_ids=position_ids(batch.attention_mask), use_cache=False)


def gather_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] without materializing the full log-softmax [B, T, V]."""
    logits = logits.float()
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(model, batch: SequenceBatch, *, return_logits: bool = False):
    """Log-prob of each next token [B, T-1], zero outside the completion; optionally the logits too."""
    logits = forward(model, batch).logits[:, :-1]
    logps = gather_logprobs(logits, batch.input_ids[:, 1:]) * batch.target_mask
    return (logps, logits) if return_logits else logps


def sequence_logprobs(model, batch: SequenceBatch, *, average: bool = False) -> Tensor:
    """Summed (or length-averaged) log-prob of each completion [B]."""
    logps = token_logprobs(model, batch).sum(-1)
    if average:
        logps = logps / batch.target_mask.sum(-1).clamp(min=1)
    return logps
