"""A transformer backbone with a scalar head: the reward model scores a sequence at its last token, the
PPO value function reads the same head at every position. InstructGPT initialises the value function
from the reward model, which here is simply a copy of this object."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor

from alignkit.models.config import ModelConfig
from alignkit.models.loading import (
    apply_lora,
    disable_dropout,
    load_adapter,
    load_pretrained,
    load_tokenizer,
    record_absolute_base,
    resolve_model_path,
)
from alignkit.models.sequences import SequenceBatch, encode_pairs, position_ids
from alignkit.runlog import write_json
from alignkit.runtime import Runtime

META_FILE = "alignkit_scalar_head.json"


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last attended token of each row [B] (works for left and right padding)."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.long().flip(-1).argmax(-1)


class ScalarModel:
    """Backbone + linear head giving one scalar per position; ``bias`` is subtracted from every output
    (the reward model's normalisation, so rewards have mean 0 on the training prompts)."""

    def __init__(self, model, tokenizer, device: torch.device, bias: float = 0.0):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.bias = bias

    @classmethod
    def from_backbone(cls, cfg: ModelConfig, *, cache_dir: Path, runtime: Runtime, path: str | None = None):
        """A fresh scalar head on the SFT model's backbone, or (``path``) a scalar model :meth:`save` wrote.

        LoRA (``cfg.lora``), as trl's RewardTrainer with a ``peft_config``: a fresh model trains a peft
        SEQ_CLS adapter on the (4-bit/8-bit if ``cfg`` says so) backbone, the head in full (peft's
        ``modules_to_save``); a quantised backbone cannot train itself, and ``lora`` means "an adapter, not
        all weights" for every model a run trains (policy, reward model, value model). It saves as the
        adapter alone, and a folder with ``adapter_config.json`` loads back onto ``cfg``'s base model,
        loaded as for training, so it scores exactly as when trained (merging the adapter into a quantised
        base would re-quantise the merged weights). The reloaded adapter stays trainable, as a reloaded full
        model does: PPO's ``value_init: reward_model`` copies it and trains adapter and head further."""
        from transformers import AutoModelForSequenceClassification

        adapter = path is not None and (Path(path) / "adapter_config.json").is_file()
        device = runtime.device
        base = resolve_model_path(cfg.name_or_path, cache_dir, runtime) if path is None or adapter else path
        tokenizer = load_tokenizer(path or base, cfg)
        model = load_pretrained(AutoModelForSequenceClassification, cfg, base, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        disable_dropout(model)
        if adapter:
            model = load_adapter(model, path, trainable=True)
        elif path is None and cfg.lora is not None:
            model = apply_lora(model, cfg.lora, task_type="SEQ_CLS")
        meta_path = Path(path or base) / META_FILE
        bias = json.loads(meta_path.read_text())["bias"] if meta_path.is_file() else 0.0
        if not (cfg.load_in_4bit or cfg.load_in_8bit):  # bitsandbytes places quantized weights itself
            model.to(device)
        return cls(model.eval(), tokenizer, device, bias)

    def copy(self) -> "ScalarModel":
        """An independent copy to train further (PPO's value model from the reward model): a LoRA model is
        copied with its quantised base, and its own adapter and head train (see :meth:`from_backbone`)."""
        return ScalarModel(copy.deepcopy(self.model), self.tokenizer, self.device, self.bias)

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def token_values(self, batch: SequenceBatch) -> Tensor:
        """The head's output at every position [B, T] (minus the bias)."""
        batch = batch.to(self.device)
        # under LoRA, the transformers model inside peft's wrapper (its trunk and head carry the adapter)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                  position_ids=position_ids(batch.attention_mask), use_cache=False)
        head = getattr(model, "score", None) or model.classifier
        return head(hidden.last_hidden_state).squeeze(-1).float() - self.bias

    def sequence_scores(self, batch: SequenceBatch) -> Tensor:
        """One score per sequence [B]: the head at the last attended token."""
        values = self.token_values(batch)
        index = last_token_index(batch.attention_mask.to(self.device))
        return values.gather(1, index.unsqueeze(1)).squeeze(1)

    def save(self, folder: str | Path) -> None:
        """The full model, or under LoRA the adapter and head only (see :meth:`from_backbone`), with the
        tokenizer and the bias."""
        record_absolute_base(self.model)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_json(Path(folder) / META_FILE, {"bias": self.bias})


class Scorer:
    """Scores (prompt, completion) texts with a scalar model, tokenized exactly as its training pairs were
    (the model's length limits; EOS appended where a completion ended), so the reward model gives the
    same number to a completion in training, in PPO, in Best-of-N and in evaluation."""

    def __init__(self, scalar: ScalarModel, model_cfg, batch_size: int = 64):
        self.scalar, self.batch_size = scalar, batch_size
        self.max_length, self.max_prompt_length = model_cfg.max_length, model_cfg.max_prompt_length

    def encode(self, prompts: list[str], completions: list[str], eos: bool | list[bool]) -> SequenceBatch:
        return encode_pairs(self.scalar.tokenizer, prompts, completions, max_length=self.max_length,
                            max_prompt_length=self.max_prompt_length, append_eos=eos)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], eos: bool | list[bool] = False) -> Tensor:
        """One score per completion [N] (float32, on CPU), in chunks of ``batch_size``."""
        eos = [eos] * len(prompts) if isinstance(eos, bool) else list(eos)
        parts = [self.scalar.sequence_scores(self.encode(prompts[i:i + self.batch_size],
                                                         completions[i:i + self.batch_size],
                                                         eos[i:i + self.batch_size])).float().cpu()
                 for i in range(0, len(prompts), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0)
