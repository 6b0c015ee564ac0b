"""DPO and its loss variants: a preference trainer whose loss comes from the loss registry.

Reference log-probs are computed once before training (the reference is frozen), then each step scores
chosen and rejected completions with the policy in one forward pass and applies the registered loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignkit.config import option
from alignkit.errors import UnknownNameError
from alignkit.losses.base import PreferenceLogps, loss_parameters
from alignkit.models.sequences import encode_pairs
from alignkit.registry import LOSSES, register_method
from alignkit.training import TrainingConfig, batch_indices, fit


@dataclass
class DPOConfig(TrainingConfig):
    """Direct preference optimisation settings (loss from the loss registry)."""

    loss: str = option("sigmoid", "registered preference loss (sigmoid = DPO, ipo, hinge, robust, plugins)")
    beta: float = option(0.1, "KL strength beta: implicit reward = beta * log(pi / pi_ref)", gt=0)
    loss_params: dict[str, Any] = option({}, "extra keyword parameters of the loss, e.g. {label_smoothing: 0.1}")
    reference_free: bool = option(False, "drop pi_ref (an implicit uniform reference)")

    def check(self):
        try:
            accepted = loss_parameters(LOSSES.get(self.loss))
        except UnknownNameError as exc:
            yield "loss", str(exc)
            return
        for key in self.loss_params:
            if key not in accepted:
                yield f"loss_params.{key}", (f"loss {self.loss!r} takes no parameter {key!r} "
                                             f"(it takes: {', '.join(accepted) or 'none'})")


def pair_batch(tokenizer, prompts, chosen, rejected, max_length, append_eos):
    """Chosen and rejected completions of the same prompts as one batch: chosen rows first."""
    return encode_pairs(tokenizer, list(prompts) * 2, list(chosen) + list(rejected),
                        max_length=max_length, append_eos=append_eos)


@torch.no_grad()
def reference_logprobs(reference, tokenizer, data, max_length, append_eos, batch_size=64):
    """Summed reference log-probs of every pair's chosen and rejected completion [N], [N]."""
    chosen, rejected = [], []
    for start in range(0, len(data), batch_size):
        idx = slice(start, start + batch_size)
        batch = pair_batch(tokenizer, data.prompts[idx], data.chosen[idx], data.rejected[idx], max_length,
                           append_eos)
        c, r = reference.sequence_logprobs(batch).cpu().chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


@register_method("dpo", config=DPOConfig, needs=("preferences",))
def train_dpo(ws, cfg: DPOConfig):
    """Direct Preference Optimization (Rafailov et al. 2023) with a pluggable preference loss."""
    data = ws.preferences
    policy = ws.load_policy()
    append_eos = ws.recipe.preferences.append_eos
    max_length = policy.max_length
    loss_fn = LOSSES.get(cfg.loss)
    ref_chosen = ref_rejected = None
    if not cfg.reference_free:
        ref_chosen, ref_rejected = reference_logprobs(ws.reference_for(policy), policy.tokenizer, data,
                                                      max_length, append_eos)

    def step(index: list[int]):
        batch = pair_batch(policy.tokenizer, [data.prompts[i] for i in index], [data.chosen[i] for i in index],
                           [data.rejected[i] for i in index], max_length, append_eos).to(policy.device)
        logps = policy.sequence_logprobs(batch)
        chosen, rejected = logps.chunk(2)
        lengths = batch.target_mask.sum(-1)
        ref = (None, None) if cfg.reference_free else (ref_chosen[index].to(policy.device),
                                                       ref_rejected[index].to(policy.device))
        out = loss_fn(PreferenceLogps(chosen, rejected, *ref, *lengths.chunk(2)), beta=cfg.beta, **cfg.loss_params)
        return out.losses.mean(), preference_metrics(out, chosen, rejected)

    fit(policy.trainable_parameters(), batch_indices(len(data), cfg, ws.seed), step, cfg, log=ws.log,
        stage="dpo", models=[policy.model])
    return policy


def preference_metrics(out, chosen_logps, rejected_logps) -> dict[str, torch.Tensor]:
    """The implicit-reward metrics DPO users expect, slash-namespaced."""
    margins = out.chosen_rewards - out.rejected_rewards
    return {
        "rewards/chosen": out.chosen_rewards.mean(),
        "rewards/rejected": out.rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > 0).float().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
