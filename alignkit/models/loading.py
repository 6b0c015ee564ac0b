"""Loading models and tokenizers with transformers and peft: a Hub id, a local folder or a ``builtin:`` alias,
optionally 4-bit/8-bit (bitsandbytes) and with a LoRA adapter; failures become one line."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from alignkit.console import quiet_module_bars
from alignkit.errors import AlignkitError
from alignkit.models.config import BUILTIN_PREFIX, LoraSettings, ModelConfig, local_tokenizer_folder
from alignkit.registry import MODELS
from alignkit.runtime import Runtime


def resolve_model_path(name_or_path: str, cache_dir: Path, runtime: Runtime) -> str:
    """Turn ``builtin:ALIAS`` into the local folder its builder produces (building it with ``runtime`` the
    first time); other names pass through."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        build = MODELS.get(name_or_path[len(BUILTIN_PREFIX):])
        return str(build(cache_dir, runtime))
    return name_or_path


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout makes log-probs stochastic, which biases KL and DPO ratios; alignment trains without it."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _quiet_gguf(cfg: ModelConfig):
    """transformers' GGUF dequantization bar, quiet unless asked (see :mod:`alignkit.console`)."""
    if not cfg.gguf_file:
        return nullcontext()
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    return quiet_module_bars(gguf_utils)


def load_pretrained(auto_cls, cfg: ModelConfig, path: str, **extra):
    from transformers import BitsAndBytesConfig

    kwargs = dict(revision=cfg.revision, dtype=getattr(torch, cfg.dtype),
                  trust_remote_code=cfg.trust_remote_code)
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    if cfg.load_in_4bit or cfg.load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=cfg.load_in_4bit, load_in_8bit=cfg.load_in_8bit, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=getattr(torch, cfg.dtype))
    with _loading(path), _quiet_gguf(cfg):
        model = auto_cls.from_pretrained(path, **kwargs, **extra)
    if cfg.load_in_4bit:
        _keep_one_4bit_cpu_path(model)
    # acts only in training mode with gradients on: sampling and scoring keep caches
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
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


def tokenizer_on_disk(cfg: ModelConfig, cache_dir: Path):
    """The policy's tokenizer if it is on disk already (nothing is downloaded or built), else None."""
    folder = local_tokenizer_folder(cfg, cache_dir)
    if folder is None:
        return None
    try:
        return load_tokenizer(str(folder), cfg)
    except AlignkitError:
        return None


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


def record_absolute_base(model) -> None:
    """Make a peft adapter record the base it was loaded from as an absolute path when that is a local folder
    (a Hub id stays as it is), so the saved adapter loads from any folder, not only the one it was
    trained in."""
    for config in getattr(model, "peft_config", {}).values():
        base = config.base_model_name_or_path
        if base and Path(base).expanduser().exists():
            config.base_model_name_or_path = str(Path(base).expanduser().resolve())
