"""Tiny, offline, deterministic building blocks for tests: a word-level tokenizer and a random GPT-2.

Nothing here touches the Hugging Face Hub; everything is built in memory in well under a second.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")

# a ChatML chat template (SmolLM2's turn markers) for tokenizers that have none
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
          "{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

DEFAULT_TEXTS = (
    "the movie was great and the acting was superb",
    "the film was boring and the plot was awful",
    "i loved this story it was moving and brilliant",
    "i hated this story it was dull and dreadful",
    "review : what did you think of it ?",
    "a wonderful cast a terrible ending really quite very good bad",
)


def tiny_tokenizer(texts: list[str] | tuple[str, ...] | None = None) -> PreTrainedTokenizerFast:
    """Whitespace/punctuation word-level tokenizer over the words of ``texts`` (default: a few review-like
    sentences), with ``<pad>`` (id 0), ``<eos>`` (id 1) and ``<unk>`` (id 2). No BOS and no post-processor,
    so ``add_special_tokens`` changes nothing, and since words never merge across a space, tokenizing
    ``prompt + " " + completion`` gives the same ids as tokenizing the two parts separately."""
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in (texts or DEFAULT_TEXTS) for w, _ in pre.pre_tokenize_str(text)})
    vocab = {tok: i for i,
             tok in enumerate(list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="right")


def tiny_gpt2(tokenizer, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64,
              initializer_range: float = 0.2) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (float32, eval mode, all dropout 0) sized for ``tokenizer``. Different
    seeds give different models; ``initializer_range`` is larger than GPT-2's 0.02 so that the logits, and
    hence log-prob differences between two such models, are far from zero."""
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def cpu_runtime():
    """A single-process CPU runtime in fp32, what a run on this machine computes with."""
    from alignkit.runtime import Runtime

    return Runtime("cpu")


def make_workspace(recipe, run_dir=None, *, cache_dir=None, log=None):
    """A run's workspace built through its public constructor, with the recipe's runtime and its
    own context."""
    from alignkit.stages.builder import StageBuilder

    return StageBuilder.for_recipe(recipe, run_dir, cache_dir=cache_dir, log=log)


def assert_method_section_applied(recipe, path) -> None:
    """Every key of the recipe file's own method section reached the validated method config, unchanged."""
    import yaml

    from alignkit.config import to_dict
    from alignkit.registry import METHODS

    section = yaml.safe_load(open(path)).get(recipe.method) or {}
    config = recipe.method_config(recipe.method)
    assert isinstance(config, METHODS.entry(recipe.method).meta["config"])
    applied = to_dict(config)
    assert section and {k: applied[k] for k in section} == section, (section, applied)


def write_pairs(path, n: int = 20):
    """A plain-text preference file of ``n`` distinct prompts (a prompt group each); returns ``path``."""
    rows = ({"prompt": f"Q{i}?", "chosen": " yes", "rejected": " no"} for i in range(n))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
