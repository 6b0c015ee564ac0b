"""Maximum likelihood on completions: the SFT stage, Preferred-FT, PPO-ptx's pretraining term and the
builtin tiny model all train through these two functions."""

from __future__ import annotations

import torch

from alignkit.models.sequences import SequenceBatch, token_logprobs
from alignkit.runlog import MetricsLog
from alignkit.training import Budget, TrainingConfig, batch_indices, fit


def completion_nll(model, batch: SequenceBatch) -> torch.Tensor:
    """Mean negative log-likelihood per completion token (prompt and padding tokens excluded)."""
    logps = token_logprobs(model, batch)
    return -logps.sum() / batch.target_mask.sum().clamp(min=1)


def finetune_on_completions(policy, prompts: list[str], completions: list[str], cfg: TrainingConfig, *,
                            log: MetricsLog, stage: str, seed: int, eos: bool | list[bool] = False,
                            budget: Budget | None = None, on_step=None) -> list[dict]:
    """Fit ``policy`` to the completions given their prompts (empty prompts: plain language modelling);
    ``eos`` appends EOS to every completion, or to those flagged."""
    budget = budget if budget is not None else Budget()
    flags = [eos] * len(prompts) if isinstance(eos, bool) else eos

    def step(index: list[int]):
        batch = policy.encode([prompts[i] for i in index], [completions[i] for i in index],
                              [flags[i] for i in index])
        budget.add_batch(batch)
        loss = completion_nll(policy.model, batch)
        return loss, {"ppl": torch.exp(loss.detach())}

    return fit(policy.trainable_parameters(), batch_indices(len(prompts), cfg, seed), step, cfg,
               log=log, stage=stage, models=[policy.model], budget=budget, on_step=on_step)
