"""Supervised fine-tuning: plain language modelling of the task's demonstrations (its train texts).

This is the first stage of the RLHF/DPO pipeline: it turns a base model into the SFT policy that later
methods start from and measure KL against. Training goes through the shared maximum-likelihood routine
(:func:`alignkit.models.finetune.finetune_on_completions`) with empty prompts, so every token counts.
Demonstrations are cut to their first ``model.max_length`` tokens and get no EOS: a cut text has no end,
and the tasks here (review openings) are about continuing text, not stopping it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from alignkit.config import option
from alignkit.models.finetune import finetune_on_completions
from alignkit.registry import register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig

CHARS_PER_TOKEN = 8  # generous: a cheap character cut that (almost) never shortens the token window


@dataclass
class SFTConfig(TrainingConfig):
    """Supervised fine-tuning on the task's demonstrations."""

    lr: float = option(5e-4, "peak learning rate (AdamW)", gt=0)
    max_examples: int = option(5000, "demonstrations to train on, a seeded random subset (0: all)", ge=0)


def demonstrations(texts: list[str], max_examples: int, max_length: int, seed: int) -> list[str]:
    """A seeded random subset of ``texts``, each cut to roughly its first ``max_length`` tokens (the exact
    cut happens at tokenization, which keeps the first ``model.max_length`` tokens)."""
    if max_examples and max_examples < len(texts):
        texts = random.Random(seed).sample(list(texts), max_examples)
    return [t[: max_length * CHARS_PER_TOKEN] for t in texts]


@register_method("sft", config=SFTConfig)
def train_sft(ws: Workspace, cfg: SFTConfig):
    """Supervised fine-tuning of recipe.model on the task's demonstrations (language modelling)."""
    policy = ws.load_policy()
    texts = demonstrations(ws.task.train_texts, cfg.max_examples, ws.recipe.model.max_length, ws.train_seed)
    finetune_on_completions(ws.ctx, policy, [""] * len(texts), texts, cfg, stage="sft", seed=ws.train_seed)
    return policy
