"""A small GPT-2 trained from scratch on a few thousand texts, the recipe both offline ``builtin:`` models
share
(:mod:`alignkit.models.builtin`'s IMDb policy, :mod:`alignkit.models.tiny_chat`'s support-chat policy): their
tokenizers and texts differ, the architecture and the training loop do not."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.context import RunContext
from alignkit.models.finetune import finetune_on_completions
from alignkit.models.policy import Policy
from alignkit.training import TrainingConfig


@dataclass(frozen=True)
class TinyGPT2Shape:
    """The architecture and training budget of a tiny builtin GPT-2; part of each model's cache key."""

    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 128
    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0


def train_tiny_gpt2(ctx: RunContext, tokenizer, texts: list[str], shape: TinyGPT2Shape, *, max_length: int,
                    bos_token_id: int, stage: str) -> Policy:
    """A fresh GPT-2 of ``shape`` fitted to ``texts`` (plain language modelling, no prompts) under ``ctx``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(shape.seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=shape.n_embd, n_layer=shape.n_layer,
                        n_head=shape.n_head,
                        n_positions=shape.n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    policy = Policy(GPT2LMHeadModel(config), tokenizer, torch.device("cpu"), max_length=max_length)
    cfg = TrainingConfig(lr=shape.lr, batch_size=shape.batch_size, max_steps=shape.steps,
                         warmup_steps=min(50, shape.steps // 10), log_every=25)
    finetune_on_completions(ctx, policy, [""] * len(texts), texts, cfg, stage=stage, seed=shape.seed)
    policy.model.generation_config.pad_token_id = tokenizer.pad_token_id
    return policy
