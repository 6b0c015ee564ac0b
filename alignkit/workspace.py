"""The shared objects of one run, built lazily and cached on disk: the task, the SFT policy and its
reference, prompts, the gold reward and preference pairs. Every method reads these same objects, which
is what makes a comparison fair by construction."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import torch

from alignkit.config import fingerprint
from alignkit.data.preferences import GENERATION_VERSION, PreferenceData, generate_preferences, load_preferences
from alignkit.data.task import Task
from alignkit.models.policy import Policy, Reference, resolve_device
from alignkit.models.scalar_head import ScalarModel
from alignkit.recipe import Recipe
from alignkit.registry import DATASETS, METHODS, REWARDS
from alignkit.runlog import MetricsLog, atomic_dir, write_json, write_jsonl


def default_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE``, else ``~/.cache/alignkit``: builtin models, gold rewards, generated pairs."""
    return Path(os.environ.get("ALIGNKIT_CACHE") or Path.home() / ".cache" / "alignkit")


class Workspace:
    """What a method receives: shared data, policies, rewards, and the run's metric log."""

    def __init__(self, recipe: Recipe, run_dir: Path | None = None, cache_dir: Path | None = None,
                 log: MetricsLog | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir) if run_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.log = log or MetricsLog(None)
        self.device = resolve_device(recipe.device)
        self.seed = recipe.seed
        self.artifact_keys: dict[str, str] = {}
        self.gold_meta: dict | None = None  # the gold reward's own record (e.g. held-out accuracy)
        self.reward_model_summary: dict | None = None  # held-out evaluation of the learned reward model

    @cached_property
    def task(self) -> Task:
        return DATASETS.get(self.recipe.task.dataset)(self.recipe.task)

    def load_policy(self) -> Policy:
        """A fresh, trainable copy of the starting (SFT) policy."""
        torch.manual_seed(self.seed)
        return Policy.load(self.recipe.model, cache_dir=self.cache_dir, device=self.device)

    @cached_property
    def sft(self) -> Policy:
        """The frozen starting policy, shared by every consumer that only samples or scores with it."""
        policy = self.load_policy()
        policy.model.requires_grad_(False)
        return policy

    def reference_for(self, policy: Policy) -> Reference:
        """pi_ref for a policy under training: its adapter-disabled self (LoRA) or the frozen SFT model."""
        return Reference(policy, None if policy.is_adapter else self.sft.model)

    def prompts(self, split: str, n: int) -> list[str]:
        """2-8 token prefixes of ``n`` texts of a split (``train`` or ``heldout``), fixed by the seed."""
        return self.task.prompts(self.sft.tokenizer, split, n, self.recipe.task, seed=self.seed)

    @cached_property
    def gold(self):
        """The ground-truth reward: ``gold(prompts, completions) -> scores``."""
        return REWARDS.get(self.recipe.gold_reward)(self)

    def _pairs_key(self) -> str:
        """Cache key of the preference pairs: everything that decides which pairs are generated or read."""
        return fingerprint(self.recipe.model, self.recipe.task, self.recipe.gold_reward, self.recipe.preferences,
                           self.seed, GENERATION_VERSION)

    @cached_property
    def preferences(self) -> PreferenceData:
        """Preference pairs from a file/dataset, or sampled from the SFT policy and gold-labelled (cached)."""
        cfg = self.recipe.preferences
        if cfg.source != "generated":
            return load_preferences(cfg)
        key = self._pairs_key()
        self.artifact_keys["preferences"] = key
        path = self.cache_dir / "preferences" / f"{key}.jsonl"
        if path.is_file():
            return PreferenceData.from_records([json.loads(x) for x in path.read_text().splitlines()], str(path))
        prompts = self.prompts("train", cfg.n_prompts)
        data = generate_preferences(self.sft, prompts, self.gold, cfg, seed=self.seed)
        if cfg.max_pairs:
            data = data.subset(list(range(min(len(data), cfg.max_pairs))))
        write_jsonl(path, data.records())
        return data

    @cached_property
    def reward_model(self) -> ScalarModel:
        """The learned (proxy) reward model: trained with the recipe's ``reward_model`` settings on the
        shared preference pairs the first time, then loaded from the cache."""
        cfg = self.recipe.method_config("reward_model")
        key = fingerprint(self._pairs_key(), cfg)
        self.artifact_keys["reward_model"] = key
        folder = self.cache_dir / "reward_models" / key
        if not folder.is_dir():
            trained = METHODS.get("reward_model")(self, cfg)
            summary, _ = trained.evaluate(self)
            with atomic_dir(folder) as tmp:
                trained.save(tmp)
                write_json(tmp / "alignkit_eval.json", summary)
        evaluation = folder / "alignkit_eval.json"
        self.reward_model_summary = json.loads(evaluation.read_text()) if evaluation.is_file() else None
        return ScalarModel.from_backbone(self.recipe.model, cache_dir=self.cache_dir, device=self.device,
                                         path=str(folder))
