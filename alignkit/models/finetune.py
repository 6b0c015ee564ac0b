"""Maximum likelihood on completions: the SFT stage, Preferred-FT, PPO-ptx's pretraining term and the
builtin tiny model all train through these two functions."""

from __future__ import annotations

import torch

from alignkit.context import RunContext
from alignkit.models.sequences import SequenceBatch, token_logprobs
from alignkit.training import TrainingConfig, batch_indices, fit


def completion_nll(model, batch: SequenceBatch) -> torch.Tensor:
    """Mean negative log-likelihood per completion token (prompt and padding tokens excluded)."""
    logps = token_logprobs(model, batch)
    return -logps.sum() / batch.target_mask.sum().clamp(min=1)


def finetune_on_completions(ctx: RunContext, policy, prompts: list[str], completions: list[str],
                            cfg: TrainingConfig, *, stage: str, seed: int,
                            eos: bool | list[bool] = False) -> list[dict]:
    """Fit ``policy`` to the completions given their prompts (empty prompts: plain language modelling) under
    ``ctx`` (which records ``policy``'s trajectory if it traces one); ``eos`` appends EOS to every
    completion, or to those flagged."""
    flags = [eos] * len(prompts) if isinstance(eos, bool) else eos

    def step(index: list[int]):
        batch = policy.encode([prompts[i] for i in index], [completions[i] for i in index],
                              [flags[i] for i in index])
        ctx.budget.add_batch(batch)
        loss = completion_nll(policy.model, batch)
        return loss, {"ppl": torch.exp(loss.detach())}

    return fit(ctx, policy.trainable_parameters(), batch_indices(len(prompts), cfg, seed), step, cfg,
               stage=stage,
               models=[policy.model], trace=policy)
