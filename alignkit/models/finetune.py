"""Maximum likelihood on completions: the SFT stage, Preferred-FT, PPO-ptx's pretraining term and the
builtin tiny model all train through these two functions."""

from __future__ import annotations

import torch

from alignkit.models.sequences import SequenceBatch, encode_pairs, token_logprobs
from alignkit.runlog import MetricsLog
from alignkit.training import TrainingConfig, batch_indices, fit


def completion_nll(model, batch: SequenceBatch) -> torch.Tensor:
    """Mean negative log-likelihood per completion token (prompt and padding tokens excluded)."""
    logps = token_logprobs(model, batch)
    return -logps.sum() / batch.target_mask.sum().clamp(min=1)


def finetune_on_completions(policy, prompts: list[str], completions: list[str], cfg: TrainingConfig, *,
                            log: MetricsLog, stage: str, seed: int, append_eos: bool = False) -> list[dict]:
    """Fit ``policy`` to the completions given their prompts (empty prompts: plain language modelling)."""
    def step(index: list[int]):
        batch = encode_pairs(policy.tokenizer, [prompts[i] for i in index], [completions[i] for i in index],
                             max_length=policy.max_length, append_eos=append_eos).to(policy.device)
        loss = completion_nll(policy.model, batch)
        return loss, {"ppl": torch.exp(loss.detach())}

    return fit(policy.trainable_parameters(), batch_indices(len(prompts), cfg, seed), step, cfg,
               log=log, stage=stage, models=[policy.model])
