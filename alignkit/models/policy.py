"""The policy abstraction every method shares: load (Hub id, local folder or ``builtin:`` alias), score
completions, sample rollouts, and a frozen reference to measure KL against."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from alignkit.config import option
from alignkit.errors import AlignkitError, UnknownNameError
from alignkit.models.sequences import (SequenceBatch, concat_batches, encode_pairs, sequence_logprobs,
                                       token_logprobs)
from alignkit.registry import MODELS

BUILTIN_PREFIX = "builtin:"


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft); the reference policy is the same model with the adapter disabled."""

    r: int = option(8, "adapter rank", ge=1)
    alpha: int = option(16, "scaling numerator (scale = alpha / r)", ge=1)
    target_modules: Optional[list[str]] = option(None, "module names to adapt (default: peft's per-architecture list)")


@dataclass
class ModelConfig:
    """Which model is the starting (SFT) policy and reference, and how to load it."""

    name_or_path: str = option("builtin:tiny-gpt2-imdb", "Hub id, local folder, or builtin:ALIAS (see `alignkit list`)")
    revision: Optional[str] = option(None, "Hub revision (branch, tag or commit)")
    gguf_file: Optional[str] = option(None, "load this GGUF file inside name_or_path (dequantized)")
    dtype: str = option("float32", "parameter dtype", choices=("float32", "bfloat16", "float16"))
    load_in_4bit: bool = option(False, "NF4 4-bit base weights via bitsandbytes (requires lora)")
    load_in_8bit: bool = option(False, "8-bit base weights via bitsandbytes (requires lora)")
    lora: Optional[LoraSettings] = option(None, "train a LoRA adapter instead of all weights")
    trust_remote_code: bool = option(False, "allow model code from the Hub")
    max_length: int = option(128, "longest prompt + completion in tokens", ge=8)
    max_prompt_length: Optional[int] = option(None, "prompts are cut to their last N tokens, the same whatever "
                                                    "completion follows (default: max_length // 2)", ge=1)

    def check(self):
        if (self.load_in_4bit or self.load_in_8bit) and self.lora is None:
            yield "lora", "quantized (4-bit/8-bit) weights cannot be trained directly; set lora: {r: 8}"
        if self.load_in_4bit and self.load_in_8bit:
            yield "load_in_8bit", "choose one of load_in_4bit and load_in_8bit"
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            yield "max_prompt_length", f"must be < max_length ({self.max_length}), leaving room for a completion"
        problem = model_source_problem(self)
        if problem:
            yield problem

    @property
    def prompt_limit(self) -> int:
        """Prompts are cut to their last this-many tokens (see :func:`~alignkit.models.sequences.encode_pairs`)."""
        return self.max_prompt_length if self.max_prompt_length is not None else max(1, self.max_length // 2)


# --------------------------------------------------------------------------------------------------
# cheap checks at recipe load: no weights are read, nothing is downloaded or built

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
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
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
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


def device_problem(name: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None when it can): checked at recipe load, so a run
    never starts, or writes anything, on a device it cannot have."""
    if name in ("auto", "cpu"):
        return None
    if name == "mps":
        return None if torch.backends.mps.is_available() else "'mps' requested but MPS is not available"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        return f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)"
    if not torch.cuda.is_available():
        return f"{name!r} requested but CUDA is not available on this machine"
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        return f"{name!r} requested but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
    return None


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device of a validated ``device`` setting (``auto``: CUDA when present, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise AlignkitError(f"device: {problem}")
    return torch.device(name)


def local_tokenizer_folder(cfg: ModelConfig, cache_dir: Path) -> Path | None:
    """The folder holding the tokenizer when it is on disk already (a local folder, or a ``builtin:``
    model already built, if its alias registered ``locate=fn(cache_dir) -> folder or None``); None otherwise."""
    name = cfg.name_or_path
    if name.startswith(BUILTIN_PREFIX):
        locate = MODELS.entry(name[len(BUILTIN_PREFIX):]).meta.get("locate")
        folder = locate(cache_dir) if locate else None
        return Path(folder) if folder else None
    path = Path(name).expanduser()
    return path if path.is_dir() and not cfg.gguf_file else None


def resolve_model_path(name_or_path: str, cache_dir: Path) -> str:
    """Turn ``builtin:ALIAS`` into the local folder its builder produces; other names pass through."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        build = MODELS.get(name_or_path[len(BUILTIN_PREFIX):])
        return str(build(cache_dir))
    return name_or_path


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout makes log-probs stochastic, which biases KL and DPO ratios; alignment trains without it."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_pretrained(auto_cls, cfg: ModelConfig, path: str, **extra):
    from transformers import BitsAndBytesConfig

    kwargs = dict(revision=cfg.revision, dtype=getattr(torch, cfg.dtype), trust_remote_code=cfg.trust_remote_code)
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    if cfg.load_in_4bit or cfg.load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=cfg.load_in_4bit, load_in_8bit=cfg.load_in_8bit, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=getattr(torch, cfg.dtype))
    with _loading(path):
        model = auto_cls.from_pretrained(path, **kwargs, **extra)
    if cfg.load_in_4bit:
        _keep_one_4bit_cpu_path(model)
    return model


def _keep_one_4bit_cpu_path(model) -> None:
    """bitsandbytes (0.50) repacks a 4-bit layer's weights, for good, into a faster inference-only format
    the first time it runs in eval mode without gradients on a CPU with AVX512-BF16: the model then fails
    to train (the packed path has no backward: PPO, GRPO and RLOO sample in eval mode before each update)
    and, with its scales rounded to bfloat16, scores differently from training mode (so PPO's first
    ratios would not be 1). Keep every layer on the one path that both trains and scores."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


@contextmanager
def _loading(path: str):
    """Turn transformers' load failures (missing folder, unknown Hub id, offline, no config) into one line."""
    try:
        yield
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(path).exists() else "Hub id (offline or not found?)"
        raise AlignkitError(f"model.name_or_path: cannot load {path!r} as a {where}: "
                            f"{str(exc).strip().splitlines()[0]}") from exc


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
    with _loading(path):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.revision,
                                                  trust_remote_code=cfg.trust_remote_code, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _prepare_kbit(model):
    """peft's preparation of a 4-bit/8-bit base for adapter training (frozen base, unquantised weights in
    float32); other models pass through. Done on load and on reload alike, so both score the same."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def apply_lora(model, settings: LoraSettings, task_type: str = "CAUSAL_LM"):
    """A fresh LoRA adapter (B = 0: the model is unchanged until it trains) on ``model``; ``task_type``
    SEQ_CLS also trains the classification head in full (peft's ``modules_to_save``)."""
    from peft import LoraConfig, get_peft_model

    model = _prepare_kbit(model)
    # no adapter dropout, like the base model: it would make log-probs (KL, DPO ratios, PPO ratios) stochastic
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0,
                      target_modules=settings.target_modules, task_type=task_type)
    model = get_peft_model(model, lora)
    disable_dropout(model)
    return model


def load_adapter(model, folder: str | Path, *, trainable: bool):
    """A saved peft adapter (with its ``modules_to_save``, e.g. a reward model's head) put back on ``model``,
    the base it was trained on, loaded as it was for training. ``trainable``: the adapter trains further
    (the base stays frozen either way)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(_prepare_kbit(model), str(folder), is_trainable=trainable)
    disable_dropout(model)
    return model


@dataclass
class Rollout:
    """Sampled completions with the exact token ids that were sampled (left-padded prompt + completion),
    and whether each completion ended with EOS (False: cut at max_new_tokens)."""

    prompts: list[str]
    completions: list[str]
    batch: SequenceBatch
    ended: list[bool]

    def select(self, rows: list[int]) -> "Rollout":
        return Rollout([self.prompts[r] for r in rows], [self.completions[r] for r in rows],
                       self.batch.select(rows), [self.ended[r] for r in rows])

    @property
    def n_tokens(self) -> int:
        """Completion tokens sampled (EOS included)."""
        return int(self.batch.completion_mask.sum())


def sampling_config(tokenizer, *, max_new_tokens: int, temperature: float, top_p: float):
    """The complete generation config of every sample alignkit draws: temperature and top-p only (T = 0:
    greedy). Every other logits processor is off (no top-k, repetition penalty, minimum length, banned
    words...), whatever a model's own ``generation_config`` asks for, so the sampled distribution is
    exactly the one that PPO ratios and the KL assume."""
    from transformers import GenerationConfig

    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)  # greedy: no warper runs, so none is set
    return GenerationConfig(
        max_new_tokens=max_new_tokens, min_length=0, num_beams=1, typical_p=1.0, epsilon_cutoff=0.0,
        eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        renormalize_logits=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, **sampling)


@contextmanager
def _only_generation_config(model, config):
    """transformers fills every unset field of a passed config from the model's own generation_config;
    swap that for ``config`` itself while generating, so nothing of the model's leaks in."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = config
    try:
        yield
    finally:
        target.generation_config = saved


class Policy:
    """A causal LM and its tokenizer: log-probs of completions, sampling, saving."""

    def __init__(self, model, tokenizer, device: torch.device, max_length: int = 128,
                 max_prompt_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length  # longest prompt + completion when tokenizing text for training
        self.max_prompt_length = max_prompt_length  # prompts are cut to this many tokens (None: half)

    @classmethod
    def load(cls, cfg: ModelConfig, *, cache_dir: Path, device: torch.device) -> "Policy":
        from transformers import AutoModelForCausalLM

        path = resolve_model_path(cfg.name_or_path, cache_dir)
        tokenizer = load_tokenizer(path, cfg)
        model = load_pretrained(AutoModelForCausalLM, cfg, path)
        disable_dropout(model)
        if cfg.lora is not None:
            model = apply_lora(model, cfg.lora)
        if not (cfg.load_in_4bit or cfg.load_in_8bit):
            model.to(device)
        model.eval()
        return cls(model, tokenizer, device, cfg.max_length, cfg.max_prompt_length)

    @classmethod
    def load_trained(cls, cfg: ModelConfig, folder: Path, *, cache_dir: Path, device: torch.device) -> "Policy":
        """A policy a run saved: a LoRA adapter on ``cfg``'s base model, or a full model folder."""
        folder = Path(folder)
        if (folder / "adapter_config.json").is_file():
            base = cls.load(dataclasses.replace(cfg, lora=None), cache_dir=cache_dir, device=device)
            model = load_adapter(base.model, folder, trainable=False)
            return cls(model.eval(), base.tokenizer, device, cfg.max_length, cfg.max_prompt_length)
        saved = dataclasses.replace(cfg, name_or_path=str(folder), revision=None, gguf_file=None, lora=None,
                                    load_in_4bit=False, load_in_8bit=False)
        return cls.load(saved, cache_dir=cache_dir, device=device)

    @property
    def is_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def encode(self, prompts: list[str], completions: list[str], eos: bool | list[bool] = False) -> SequenceBatch:
        """Text pairs as this policy's training and scoring batches (its length limits, on its device)."""
        return encode_pairs(self.tokenizer, prompts, completions, max_length=self.max_length,
                            max_prompt_length=self.max_prompt_length, append_eos=eos).to(self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def sequence_logprobs(self, batch: SequenceBatch, *, average: bool = False) -> torch.Tensor:
        return sequence_logprobs(self.model, batch.to(self.device), average=average)

    def token_logprobs(self, batch: SequenceBatch, **kwargs):
        return token_logprobs(self.model, batch.to(self.device), **kwargs)

    @torch.no_grad()
    def sample(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
               batch_size: int = 64, progress: str | None = None, budget=None) -> Rollout:
        """Sample one completion per prompt; temperature 0 is greedy. No top-k: with temperature 1 and
        top_p 1 the samples come from exactly the distribution that :meth:`token_logprobs` scores.
        ``budget`` (a :class:`~alignkit.training.Budget`) counts what was sampled."""
        from alignkit.runtime import current

        runtime = current()
        was_training = self.model.training
        self.model.eval()
        chunks = [prompts[start:start + batch_size] for start in range(0, len(prompts), batch_size)]
        # one seed per chunk, drawn from the caller's RNG: the same samples whichever process draws a chunk
        seeds = torch.randint(0, 2 ** 62, (len(chunks),)).tolist()
        bar = tqdm(total=len(chunks), desc=progress, unit="batch", dynamic_ncols=True, leave=False,
                   disable=not (progress and len(chunks) > 1 and runtime.is_main))

        def draw(i: int, chunk: list[str]):
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seeds[i])
                out = self._sample_chunk(chunk, max_new_tokens, temperature, top_p)
            bar.update(runtime.world)
            return out

        drawn = runtime.map_chunks(draw, chunks)  # shared out between processes, gathered in order
        bar.close()
        self.model.train(was_training)
        parts = [batch for batch, _, _ in drawn]
        completions = [text for _, texts, _ in drawn for text in texts]
        ended = [stop for _, _, stops in drawn for stop in stops]
        rollout = Rollout(list(prompts), completions, concat_batches(parts, self.tokenizer.pad_token_id), ended)
        if budget is not None:
            budget.add_rollout(rollout)
        return rollout

    def _sample_chunk(self, prompts, max_new_tokens, temperature, top_p):
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        config = sampling_config(tok, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        with _only_generation_config(self.model, config):
            output = self.model.generate(**enc, generation_config=config)
        new = output[:, enc["input_ids"].shape[1]:]
        # keep tokens up to and including the first EOS; everything after it is padding
        is_eos = (new == tok.eos_token_id).long()
        after_eos = (is_eos.cumsum(-1) - is_eos) > 0
        completion_mask = (~after_eos).long()
        new = new.masked_fill(after_eos, tok.pad_token_id)
        batch = SequenceBatch(
            input_ids=torch.cat([enc["input_ids"], new], dim=1),
            attention_mask=torch.cat([enc["attention_mask"], completion_mask], dim=1),
            completion_mask=torch.cat([torch.zeros_like(enc["input_ids"]), completion_mask], dim=1),
        )
        texts = tok.batch_decode(new, skip_special_tokens=True)
        return batch.to("cpu"), texts, is_eos.any(-1).tolist()

    def save(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class Reference:
    """The frozen reference policy pi_ref: the adapter-disabled model under LoRA, else a frozen model."""

    def __init__(self, policy: Policy, frozen_model=None):
        self.policy = policy
        self.model = frozen_model
        if frozen_model is None and not policy.is_adapter:
            self.model = copy.deepcopy(policy.model).eval()
            self.model.requires_grad_(False)

    @contextmanager
    def _as_model(self):
        if self.model is not None:
            yield self.model
        else:
            with self.policy.model.disable_adapter():
                yield self.policy.model

    @torch.no_grad()
    def sequence_logprobs(self, batch: SequenceBatch, *, average: bool = False) -> torch.Tensor:
        with self._as_model() as model:
            return sequence_logprobs(model, batch.to(self.policy.device), average=average)

    @torch.no_grad()
    def token_logprobs(self, batch: SequenceBatch, **kwargs):
        with self._as_model() as model:
            return token_logprobs(model, batch.to(self.policy.device), **kwargs)

    def as_policy(self) -> Policy:
        """A policy view of the reference for sampling (a frozen copy, or the base with adapters off)."""
        if self.model is not None:
            return Policy(self.model, self.policy.tokenizer, self.policy.device, self.policy.max_length,
                          self.policy.max_prompt_length)
        return _AdapterDisabledPolicy(self.policy.model, self.policy.tokenizer, self.policy.device,
                                      self.policy.max_length, self.policy.max_prompt_length)


class _AdapterDisabledPolicy(Policy):
    def _sample_chunk(self, *args):
        with self.model.disable_adapter():
            return super()._sample_chunk(*args)

    def token_logprobs(self, batch, **kwargs):
        with self.model.disable_adapter():
            return super().token_logprobs(batch, **kwargs)

