"""``builtin:tiny-chat-support``: the starting policy of the bundled ``support_chat`` comparison in miniature,
a small GPT-2 with a ChatML chat template trained from scratch on the replies of ``builtin:support-chat``.

It learns every reply style of the 32 topics equally (the concise polite answer and the three ways the data's
rejected replies fail: curt, rambling, evasive), so it starts by answering each question one of four ways and
an alignment method has to learn which one people preferred. Shipped inside the package like
``builtin:tiny-gpt2-imdb`` (:mod:`alignkit.models.shipped`), else built on first use (about a minute on 2 CPU
cores) and cached."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from alignkit.cache import CacheEntry
from alignkit.config import fingerprint
from alignkit.context import RunContext
from alignkit.data.chat import read_conversations
from alignkit.data.sources import read_rows, source_digest
from alignkit.models.shipped import shipped_identity, shipped_model
from alignkit.models.tiny_gpt2 import TinyGPT2Shape, train_tiny_gpt2
from alignkit.runlog import write_json
from alignkit.runtime import Runtime

ALIAS, DATA = "tiny-chat-support", "builtin:support-chat"
PAD, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] "
          "}}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass(frozen=True)
class TinyChatRecipe(TinyGPT2Shape):
    """How the builtin tiny chat model is made; any change gives a new cache entry."""

    vocab_size: int = 2048
    n_positions: int = 192
    max_length: int = 160
    steps: int = 400


def conversations(source: str = DATA) -> list[list[dict]]:
    """Every distinct (question, reply) conversation of the data: each prompt with its chosen reply and each
    rejected one."""
    seen, out = set(), []
    for c in read_conversations(read_rows(source), source):
        for reply in (c.chosen, c.rejected):
            key = repr(c.prompt + reply)
            if key not in seen:
                seen.add(key)
                out.append(c.prompt + reply)
    return out


def chat_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with ChatML's turn markers as single special tokens; the end of a turn is
    EOS (sampling stops there), ``<|endoftext|>`` pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, TURN_START, TURN_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=TURN_END, bos_token=PAD,
                                        pad_token=PAD,
                                        unk_token=PAD, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_chat(recipe: TinyChatRecipe, folder: Path, ctx: RunContext, source: str = DATA) -> None:
    """Train the tokenizer and the model on the rendered conversations of ``source`` and save both."""
    dialogues = conversations(source)
    probe = chat_tokenizer([m["content"] for d in dialogues for m in d], recipe.vocab_size)
    texts = [probe.apply_chat_template(d, tokenize=False) for d in dialogues]
    tokenizer = chat_tokenizer(texts, recipe.vocab_size)  # trained on the rendered text, markers included
    policy = train_tiny_gpt2(ctx, tokenizer, texts, recipe, max_length=recipe.max_length,
                             bos_token_id=tokenizer.pad_token_id, stage="builtin/tiny-chat-support")
    policy.model.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.save(folder)
    write_json(folder / "alignkit_builtin.json", {**asdict(recipe), "data": source})


def tiny_chat_support(cache_dir: Path, runtime: Runtime, recipe: TinyChatRecipe = TinyChatRecipe()) -> Path:
    """The tiny support-chat model's folder: the shipped one for the default recipe and data, else the cached
    build, trained the first time in a context of its own (CPU, fp32, logging nowhere); keyed by the data's
    content too."""
    shipped = shipped_model(ALIAS, made_by(recipe))
    if shipped is not None:
        return shipped
    return CacheEntry(cache_dir, "models", f"{ALIAS}-{made_by(recipe)}").ensure(
        lambda folder: build_tiny_chat(recipe, folder, RunContext(runtime.fp32())), runtime)


def made_by(recipe: TinyChatRecipe = TinyChatRecipe()) -> str:
    """What makes the model: its recipe and the data's content (its cache folder's key)."""
    return fingerprint(recipe, source_digest(DATA))


def identity(recipe: TinyChatRecipe = TinyChatRecipe()) -> str:
    """The model in the cache keys of every stage built with it, so a changed model never meets stages made
    with the old one: the shipped files' checksums, else what makes a local build (:func:`made_by`)."""
    return shipped_identity(ALIAS, made_by(recipe)) or made_by(recipe)


def locate_tiny_chat(cache_dir: Path) -> Path | None:
    """The tokenizer's folder without building anything: the shipped model's."""
    return shipped_model(ALIAS, made_by())
