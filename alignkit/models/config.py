"""The ``model`` section of a recipe: which model is the starting (SFT) policy and reference, and the cheap
checks made at recipe load (no weights read, nothing downloaded or built)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from alignkit.config import option
from alignkit.errors import UnknownNameError
from alignkit.registry import MODELS

BUILTIN_PREFIX = "builtin:"


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft); the reference policy is the same model with the adapter disabled."""

    r: int = option(8, "adapter rank", ge=1)
    alpha: int = option(16, "scaling numerator (scale = alpha / r)", ge=1)
    target_modules: Optional[list[str]] = option(None,
                                                 "module names to adapt (default: peft's per-architecture "
                                                 "list)")


@dataclass
class ModelConfig:
    """Which model is the starting (SFT) policy and reference, and how to load it."""

    name_or_path: str = option("builtin:tiny-gpt2-imdb",
                               "Hub id, local folder, or builtin:ALIAS (see `alignkit list`)")
    revision: Optional[str] = option(None, "Hub revision (branch, tag or commit)")
    gguf_file: Optional[str] = option(None, "load this GGUF file inside name_or_path (dequantized)")
    dtype: str = option("float32", "parameter dtype", choices=("float32", "bfloat16", "float16"))
    load_in_4bit: bool = option(False, "NF4 4-bit base weights via bitsandbytes (requires lora)")
    load_in_8bit: bool = option(False, "8-bit base weights via bitsandbytes (requires lora)")
    lora: Optional[LoraSettings] = option(None, "train a LoRA adapter instead of all weights")
    trust_remote_code: bool = option(False, "allow model code from the Hub")
    max_length: int = option(128, "longest prompt + completion in tokens", ge=8)
    max_prompt_length: Optional[int] = option(None,
                                              "prompts are cut to their last N tokens, the same whatever "
                                                    "completion follows (default: max_length // 2)", ge=1)
    gradient_checkpointing: bool = option(False,
                                          "recompute activations in the backward pass instead of keeping "
                                                 "them (less memory, slower steps; every model a run trains: "
                                                 "policy, reward and value model, LoRA included)",
                                                 identity=False)

    def check(self):
        if (self.load_in_4bit or self.load_in_8bit) and self.lora is None:
            yield "lora", "quantized (4-bit/8-bit) weights cannot be trained directly; set lora: {r: 8}"
        if self.load_in_4bit and self.load_in_8bit:
            yield "load_in_8bit", "choose one of load_in_4bit and load_in_8bit"
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            yield (
                "max_prompt_length",
                f"must be < max_length ({self.max_length}), leaving room for a completion",
            )
        problem = model_source_problem(self)
        if problem:
            yield problem

    @property
    def prompt_limit(self) -> int:
        """Prompts are cut to their last this-many tokens
        (see :func:`~alignkit.models.sequences.encode_pairs`)."""
        return self.max_prompt_length if self.max_prompt_length is not None else max(1, self.max_length // 2)


# --------------------------------------------------------------------------------------------------
# cheap checks at recipe load: no weights are read, nothing is downloaded or built

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                    "spiece.model",
                    "vocab.txt")
# config.json keys that transformers needs as positive integers when present
_POSITIVE_INT_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_ctx", "hidden_size",
                      "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                      "max_position_embeddings")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def looks_like_local_path(name: str) -> bool:
    """A name that can only be a local path (a Hub id is ``name`` or ``org/name``)."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") >= 2 or name in (".", "..")


def model_source_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(key, message) when ``name_or_path`` cannot work: an unknown ``builtin:`` alias, a missing local
    folder, or a folder without config/tokenizer/weights files or whose config.json is broken. Hub ids
    cannot be checked offline and pass; so do builtin models, which are built on first use."""
    name = cfg.name_or_path
    if name.startswith(BUILTIN_PREFIX):
        try:
            MODELS.entry(name[len(BUILTIN_PREFIX):])
        except UnknownNameError as exc:
            return "name_or_path", str(exc)
        return None
    path = Path(name).expanduser()
    if not path.exists():
        if looks_like_local_path(name):
            return "name_or_path", f"cannot load {name!r} as a local folder: it does not exist"
        return None  # a Hub id: checked when it is downloaded
    problem = _folder_problem(path, cfg)
    return ("name_or_path", f"cannot load {name!r} as a local folder: {problem}") if problem else None


def _folder_problem(path: Path, cfg: ModelConfig) -> str | None:
    if not path.is_dir():
        return "it is a file, not a model folder"
    if cfg.gguf_file:
        return None if (path / cfg.gguf_file).is_file() else f"model.gguf_file {cfg.gguf_file!r} is not in it"
    config = path / "config.json"
    if not config.is_file():
        return "no config.json in it"
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"config.json is not valid JSON: {str(exc).splitlines()[0]}"
    if not isinstance(data, dict):
        return f"config.json must hold a JSON object, got {type(data).__name__}"
    if not isinstance(data.get("model_type", ""), str):
        return f"config.json: model_type must be a string, got {data['model_type']!r}"
    for key in _POSITIVE_INT_KEYS:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"config.json: {key} must be a positive integer, got {value!r}"
    for key in _TOKEN_ID_KEYS:
        value = data.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
        ):
            return f"config.json: {key} must be a token id (an integer >= 0), got {value!r}"
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return f"no tokenizer files in it (expected one of {', '.join(_TOKENIZER_FILES)})"
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            json.loads(tokenizer_config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"tokenizer_config.json is not valid JSON: {str(exc).splitlines()[0]}"
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        return f"no weights in it (expected {' or '.join(_WEIGHT_FILES[::2])})"
    return None


def local_tokenizer_folder(cfg: ModelConfig, cache_dir: Path) -> Path | None:
    """The folder holding the tokenizer when it is on disk already (a local folder, or a ``builtin:``
    model already built, if its alias registered ``locate=fn(cache_dir) -> folder or None``);
    None otherwise."""
    name = cfg.name_or_path
    if name.startswith(BUILTIN_PREFIX):
        locate = MODELS.entry(name[len(BUILTIN_PREFIX):]).meta.get("locate")
        folder = locate(cache_dir) if locate else None
        return Path(folder) if folder else None
    path = Path(name).expanduser()
    return path if path.is_dir() and not cfg.gguf_file else None
