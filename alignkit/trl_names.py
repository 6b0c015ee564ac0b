"""trl's names for alignkit's settings: ``--set dpo.learning_rate=...`` lands on ``dpo.lr``.

A method's config class lists trl's names it accepts (``ALIASES``, see :func:`alignkit.config.aliases`); an
override given by trl's name replaces the recipe's value of the canonical key, as any override does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import yaml

from alignkit.config import aliases, read_yaml
from alignkit.errors import AlignkitError, ConfigError
from alignkit.registry import METHODS, load_builtins

BATCH_ALIAS = "per_device_train_batch_size"  # becomes batch_size (TrainingConfig.from_aliases)
# an override of the first replaces the recipe's second: one batch size, one warm-up
REPLACES = {BATCH_ALIAS: "batch_size", "warmup_ratio": "warmup_steps", "warmup_steps": "warmup_ratio"}


def canonical_overrides(raw: dict, overrides: Iterable[str]) -> list[str]:
    """``overrides`` with a method section's trl names renamed to alignkit's; a per-device batch size
    replaces the recipe's ``batch_size``, and one warm-up the other (``REPLACES``: dropped from ``raw``, in
    place)."""
    load_builtins()
    out = []
    for item in overrides:
        key, eq, value = item.partition("=")
        parts = key.strip().split(".")
        if eq and len(parts) == 2 and parts[0] in METHODS:
            cls = METHODS.entry(parts[0]).meta["config"]
            name = aliases(cls).get(parts[1], parts[1])
            section = raw.get(parts[0])
            if isinstance(section, dict):
                section.pop(name if name != parts[1] else "", None)
                section.pop(REPLACES.get(parts[1], ""), None)
            item = f"{parts[0]}.{name}={value}"
        out.append(item)
    return out


# a flat trl config (trl's TrainingArguments and ModelConfig keys at the top level, as trl's docs give them)
MARKERS = ("model_name_or_path", "dataset_name", "output_dir", "learning_rate", "per_device_train_batch_size")
TOP = {"model_name_or_path": "model.name_or_path", "dataset_train_split": "preferences.split",
       "dataset_config": "preferences.config", "max_length": "model.max_length",
       "max_prompt_length": "model.max_prompt_length", "run_name": "name", "hub_model_id": "push_to_hub"}
RECIPE_KEYS = ("method", "name", "seed", "device", "report_to", "plugins", "gold_reward",
               "gold_reward_options",
               "model", "task", "preferences", "eval", "train_seed", "precision")


def is_trl_config(raw: dict) -> bool:
    """Whether ``raw`` is written as trl's flat config rather than as an alignkit recipe."""
    return any(key in raw for key in MARKERS)


def from_trl_config(raw: dict, source: str, stem: str = "") -> dict:
    """An alignkit recipe (plain data) from a flat trl config: the model, data and precision keys to their
    sections, every key of the method's settings (by alignkit's name or trl's) into its section,
    ``output_dir`` left out (see :func:`trl_output_dir`). The method: ``method`` (``alignkit dpo`` sets
    it), else the one the file's name names (``trl_dpo.yaml``). Keys alignkit does not take: one line."""
    load_builtins()
    raw = dict(raw)
    words = stem.replace("-", "_").split("_")
    method = raw.get("method") or next((m for m in METHODS.names() if m in words), None)
    if method not in METHODS:
        raise ConfigError(f"{source}: a trl config names no method: run it as alignkit dpo --config FILE (or "
                          f"kto, grpo, rloo), or add method: dpo")
    out: dict = {k: raw.pop(k) for k in [*RECIPE_KEYS, *METHODS.names()] if k in raw}
    out["method"] = method
    if isinstance(out.get("report_to"), str):  # trl takes one name, "all" or "none"
        out["report_to"] = [] if out["report_to"] == "none" else [out["report_to"]]
    raw.pop("output_dir", None)
    for key, dotted in TOP.items():
        if key in raw:
            head, _, tail = dotted.partition(".")
            value = raw.pop(key)
            if tail:  # a --set or flag of the section's key (already in out) wins over the file's
                out.setdefault(head, {}).setdefault(tail, value)
            else:
                out.setdefault(head, value)
    if "dataset_name" in raw:
        name = str(raw.pop("dataset_name"))
        local = Path(name).exists() or name.startswith(("./", "../", "/"))
        out.setdefault("preferences", {}).setdefault("source", name if local or name.startswith("hf:")
                                                     else f"hf:{name}")
        out.setdefault("task", {})["dataset"] = "preferences"
        out.setdefault("gold_reward", "heldout-reward-model")  # a judge of your data, not IMDb sentiment
    for flag in ("bf16", "fp16"):
        if raw.pop(flag, False) is True:
            out["precision"] = flag
    if raw.pop("push_to_hub", False) is True and "push_to_hub" not in out:
        raise ConfigError(f"{source}: push_to_hub: true needs hub_model_id: ORG/NAME")
    cls = METHODS.entry(method).meta["config"]
    known = set(getattr(cls, "__dataclass_fields__", {})) | set(aliases(cls)) | {BATCH_ALIAS}
    section = out.setdefault(method, {})
    for key in [k for k in raw if k in known]:
        section[key] = raw.pop(key)
    if "gradient_accumulation_steps" in section and not {"batch_size", BATCH_ALIAS} & set(section):
        raise ConfigError(f"{source}: gradient_accumulation_steps: in trl it multiplies "
                          f"per_device_train_batch_size (8 unless given); give "
                          f"per_device_train_batch_size too")
    if raw:
        raise ConfigError(f"{source}: trl keys alignkit does not take: {', '.join(raw)}: remove them; "
                          f"{method}'s settings: alignkit list, recipes/")
    return out


def trl_output_dir(path) -> Path | None:
    """The ``output_dir`` of a flat trl config file, else None."""
    raw = read_yaml(path)
    return Path(raw["output_dir"]) if is_trl_config(raw) and raw.get("output_dir") else None


# the trl-style flags of `alignkit run` and `alignkit compare`, as the --set overrides they stand for

def trl_overrides(model_name_or_path: str | None = None, dataset_name: str | None = None,
                  dataset_split: str | None = None, dataset_config: str | None = None,
                  report_to: str | None = None) -> list[str]:
    """The ``--set`` overrides that the trl-style flags stand for (values JSON-quoted: always strings)."""
    sets = []
    if report_to is not None:
        sets.append(f"report_to={json.dumps([t.strip() for t in report_to.split(',') if t.strip()])}")
    if model_name_or_path is not None:
        sets.append(f"model.name_or_path={json.dumps(model_name_or_path)}")
    if dataset_name is not None:
        local = dataset_name.startswith("hf:") or Path(dataset_name).exists()
        if not local and (dataset_name.startswith(("./", "../", "/", "~")) or dataset_name.lower().endswith(
                (".jsonl", ".json", ".csv", ".tsv", ".parquet"))):  # a path, not a Hub id: say it is missing
            raise AlignkitError(f"--dataset_name {dataset_name}: file not found (a Hub dataset is named "
                                f"ORG/NAME)")
        sets.append(f"preferences.source={json.dumps(dataset_name if local else 'hf:' + dataset_name)}")
        sets.append("task.dataset=preferences")
    if dataset_split is not None:
        sets.append(f"preferences.split={json.dumps(dataset_split)}")
    if dataset_config is not None:
        sets.append(f"preferences.config={json.dumps(dataset_config)}")
    return sets


FLAG_OF = {"model.name_or_path": "--model_name_or_path", "preferences.source": "--dataset_name",
           "task.dataset": "--dataset_name", "preferences.split": "--dataset_split",
           "preferences.config": "--dataset_config", "report_to": "--report-to"}


def flag_overrides(overrides: tuple[str, ...], **flags) -> tuple[str, ...]:
    """The trl-style ``flags``' overrides, then ``overrides``; a ``--set`` of a key a flag sets, to another
    value, is refused in one line (which of the two was meant cannot be known)."""

    def parsed(text: str):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    sets = trl_overrides(**flags)
    given = {item.split("=", 1)[0].strip(): item.split("=", 1)[1] for item in overrides if "=" in item}
    for key, value in (item.split("=", 1) for item in sets):
        if key in given and parsed(given[key]) != parsed(value):
            raise AlignkitError(f"{FLAG_OF[key]} sets {key} to {value}, and --set {key}={given[key]} to "
                                f"another value; give one")
    return (*sets, *overrides)
