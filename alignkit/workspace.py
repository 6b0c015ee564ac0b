"""The shared objects of one run, built lazily and cached on disk: the task, the SFT policy and its
reference, prompts, the gold reward and preference pairs. Every method reads these same objects, which
is what makes a comparison fair by construction. Each cached stage is a checksummed ``CacheEntry``
(alignkit/cache.py): a truncated or half-written one is rebuilt with a notice, never trusted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from alignkit.cache import CacheEntry, default_cache_dir
from alignkit.config import fingerprint
from alignkit.data.preferences import GENERATION_VERSION, PreferenceData, generate_preferences, load_preferences
from alignkit.data.task import Task
from alignkit.errors import DataError
from alignkit.eval.evaluator import ReferenceSamples, trajectory_point
from alignkit.models.config import ModelConfig, local_tokenizer_folder
from alignkit.models.policy import Policy, Reference
from alignkit.models.scalar_head import ScalarModel, Scorer
from alignkit.recipe import Recipe
from alignkit.registry import DATASETS, METHODS, REWARDS
from alignkit.runlog import MetricsLog, append_jsonl, read_jsonl, write_json, write_jsonl
from alignkit.runtime import start
from alignkit.training import Budget


def chat_template_text(model: ModelConfig, cache_dir: Path) -> tuple[str, ...]:
    """The chat template a local tokenizer folder holds (its text, so editing it in place changes the keys
    built on the pairs); empty for a tokenizer not on disk yet (a Hub id: pin ``model.revision``) or one
    without a template."""
    folder = local_tokenizer_folder(model, cache_dir)
    if folder is None:
        return ()
    texts = [p.read_text() for p in sorted(folder.glob("*.jinja"))]
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except (ValueError, AttributeError):
            template = None
        texts.append(json.dumps(template) if template else "")
    return tuple(t for t in texts if t)


class Workspace:
    """What a method receives: shared data, policies, rewards, the run's metric log and its training budget.

    Shared stages are keyed by what decides them and nothing else, so changing a setting rebuilds exactly
    the stages downstream of it: pairs <- (model, task, gold reward, generation settings, seed); the
    train/held-out split <- pairs + heldout_fraction; reward model and reference log-probs <- split + their
    own settings; reference samples <- (model, task, gold reward, evaluation sampling, temperature, seed).
    """

    def __init__(self, recipe: Recipe, run_dir: Path | None = None, cache_dir: Path | None = None,
                 log: MetricsLog | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir) if run_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.log = log or MetricsLog(None)
        self.runtime = start(recipe.device, recipe.precision)  # the process's accelerator (alignkit.runtime)
        self.device = self.runtime.device
        self.seed = recipe.seed  # shared stages
        self.train_seed = recipe.seed if recipe.train_seed is None else recipe.train_seed  # this run only
        self.budget = Budget()
        self.trained_steps = 0  # the last step a training loop reported to its checkpoint hook
        self.artifact_keys: dict[str, str] = {}
        self.gold_meta: dict | None = None  # the gold reward's own record (e.g. held-out accuracy)
        self.reward_model_summary: dict | None = None  # held-out evaluation of the learned reward model

    @cached_property
    def task(self) -> Task:
        return DATASETS.get(self.recipe.task.dataset)(self.recipe.task)

    def load_policy(self) -> Policy:
        """A fresh, trainable copy of the starting (SFT) policy."""
        torch.manual_seed(self.train_seed)
        return Policy.load(self.recipe.model, cache_dir=self.cache_dir, device=self.device)

    @cached_property
    def sft(self) -> Policy:
        """The frozen starting policy, shared by every consumer that only samples or scores with it."""
        torch.manual_seed(self.seed)
        policy = Policy.load(self.recipe.model, cache_dir=self.cache_dir, device=self.device)
        policy.model.requires_grad_(False)
        return policy

    def reference_for(self, policy: Policy) -> Reference:
        """pi_ref for a policy under training: its adapter-disabled self (LoRA) or the frozen SFT model."""
        return Reference(policy, None if policy.is_adapter else self.sft.model)

    def prompts(self, split: str, n: int) -> list[str]:
        """2-8 token prefixes of ``n`` texts of a split (``train`` or ``heldout``), fixed by the seed."""
        return self.task.prompts(self.sft.tokenizer, split, n, self.recipe.task, seed=self.seed)

    @cached_property
    def eval_prompts(self) -> list[str]:
        """The held-out prompts every method is evaluated on."""
        return self.prompts("heldout", self.recipe.eval.n_prompts)

    @cached_property
    def gold(self):
        """The ground-truth reward: ``gold(prompts, completions) -> scores``."""
        return REWARDS.get(self.recipe.gold_reward)(self)

    @cached_property
    def judge(self):
        """What decides win rates: the gold reward unless ``eval.judge`` names another registered judge."""
        name = self.recipe.eval.judge
        return self.gold if name in ("gold", self.recipe.gold_reward) else REWARDS.get(name)(self)

    # ---------------------------------------------------------------------------------------------
    # cache keys: computable without building anything, so a finished run can be checked for staleness

    def stage_keys(self) -> dict[str, str]:
        """The cache key of every shared stage under this recipe."""
        return {"preferences": self.pairs_key(), "pair_split": self.split_key(),
                "reward_model": self.reward_model_key(), "reference_logps": self.reference_logps_key(),
                "reference_samples": self.reference_samples_key(self.recipe.eval.temperature)}

    def gold_identity(self) -> tuple:
        """The gold reward in a cache key: its name, and its options when it takes any (keys of rewards
        without options stay as they were)."""
        options = self.recipe.gold_reward_options
        return (self.recipe.gold_reward, options) if options else (self.recipe.gold_reward,)

    def pairs_key(self) -> str:
        """Everything that decides which pairs are generated or read (not how they are split or tokenized)."""
        cfg = self.recipe.preferences
        deciding = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("heldout_fraction", "append_eos")}
        source, template = cfg.source, ()
        if source != "generated" and Path(source).is_file():
            source = hashlib.sha256(Path(source).read_bytes()).hexdigest()  # the file's content, not its name
            template = chat_template_text(self.recipe.model, self.cache_dir)  # conversational rows render with it
        return fingerprint(self.recipe.model, self.recipe.task, *self.gold_identity(), deciding, source,
                           self.seed, GENERATION_VERSION, *template)

    def split_key(self) -> str:
        return fingerprint(self.pairs_key(), self.recipe.preferences.heldout_fraction)

    def reward_model_key(self) -> str:
        precision = () if self.recipe.precision == "fp32" else (self.recipe.precision,)  # fp32 keys stay as they were
        lora = ("lora-adapter",) if self.recipe.model.lora else ()  # under LoRA it trains an adapter since rm-2
        return fingerprint(self.split_key(), self.recipe.method_config("reward_model"), self.recipe.model,
                           self.recipe.preferences.append_eos, "rm-2", *precision, *lora)

    def reference_logps_key(self) -> str:
        return fingerprint(self.split_key(), self.recipe.model, self.recipe.preferences.append_eos, "ref-logps-1")

    def reference_samples_key(self, temperature: float) -> str:
        cfg = self.recipe.eval
        return fingerprint(self.recipe.model, self.recipe.task, *self.gold_identity(), cfg.n_prompts, cfg.top_p,
                           cfg.max_new_tokens, float(temperature), self.seed, GENERATION_VERSION)

    # ---------------------------------------------------------------------------------------------
    # shared stages

    def cache_entry(self, kind: str, key: str, suffix: str = "") -> CacheEntry:
        """The checksummed, lock-protected cache entry ``<cache_dir>/<kind>/<key><suffix>`` (a folder when
        ``suffix`` is empty): a missing, partial or corrupt one is rebuilt, never trusted."""
        return CacheEntry(self.cache_dir, kind, key, suffix)

    @cached_property
    def preferences(self) -> PreferenceData:
        """Preference pairs from a file/dataset, or sampled from the SFT policy and gold-labelled (cached)."""
        cfg = self.recipe.preferences
        if cfg.source != "generated":
            from alignkit.models.loading import load_tokenizer, resolve_model_path

            model = self.recipe.model  # conversational rows are rendered with the policy's own chat template
            return load_preferences(cfg, lambda: load_tokenizer(resolve_model_path(model.name_or_path,
                                                                                   self.cache_dir), model))
        key = self.pairs_key()
        self.artifact_keys["preferences"] = key

        def build(path: Path) -> PreferenceData:
            prompts = self.prompts("train", cfg.n_prompts)
            data = generate_preferences(self.sft, prompts, self.gold, cfg, seed=self.seed)
            if cfg.max_pairs:
                data = data.subset(list(range(min(len(data), cfg.max_pairs))))
            write_jsonl(path, data.records())
            return data

        entry = self.cache_entry("preferences", key, ".jsonl")
        return entry.fetch(build, lambda path: PreferenceData.from_records(read_jsonl(path), str(path)))

    @cached_property
    def _pair_split(self) -> tuple[PreferenceData, PreferenceData]:
        fraction = self.recipe.preferences.heldout_fraction
        train, heldout = self.preferences.split(fraction, self.seed)
        if not len(train):
            raise DataError(f"preferences.heldout_fraction: all {len(set(heldout.group))} prompt group(s) of the "
                            f"preference pairs are held out ({fraction}); at least 2 prompts are needed")
        self.artifact_keys["pair_split"] = self.split_key()
        return train, heldout

    @property
    def train_pairs(self) -> PreferenceData:
        """The pairs every method learns from: the reward model, DPO and its variants, Preferred-FT."""
        return self._pair_split[0]

    @property
    def heldout_pairs(self) -> PreferenceData:
        """Pairs of held-out prompt groups, never trained on: the reward model's accuracy is measured here."""
        return self._pair_split[1]

    @contextmanager
    def _separate_budget(self):
        """Shared stages keep their own budget, so a run's budget is its own training only."""
        saved, self.budget = self.budget, Budget()
        try:
            yield self.budget
        finally:
            self.budget = saved

    @cached_property
    def reward_model_folder(self) -> Path:
        """The cached reward model's folder: trained with the recipe's ``reward_model`` settings on the shared
        training pairs the first time (and evaluated on the held-out pairs), then reused."""
        key = self.reward_model_key()
        self.artifact_keys["reward_model"] = key

        def build(tmp: Path) -> None:
            with self._separate_budget() as budget:
                trained = METHODS.get("reward_model")(self, self.recipe.method_config("reward_model"))
            summary, _ = trained.evaluate(self)
            summary["budget"] = budget.as_dict()
            trained.save(tmp)
            write_json(tmp / "alignkit_eval.json", summary)

        folder = self.cache_entry("reward_models", key).ensure(build)
        evaluation = folder / "alignkit_eval.json"
        self.reward_model_summary = json.loads(evaluation.read_text()) if evaluation.is_file() else None
        return folder

    @cached_property
    def reward_model(self) -> ScalarModel:
        """The learned (proxy) reward model: trained with the recipe's ``reward_model`` settings on the
        shared training pairs the first time, then loaded from the cache."""
        return ScalarModel.from_backbone(self.recipe.model, cache_dir=self.cache_dir, device=self.device,
                                         path=str(self.reward_model_folder))

    @cached_property
    def reward_model_4bit(self) -> ScalarModel:
        """The same reward model with NF4 4-bit backbone weights (bitsandbytes): a frozen scorer in about a
        quarter of the memory, for memory-lean PPO."""
        quantized = dataclasses.replace(self.recipe.model, load_in_4bit=True, load_in_8bit=False, lora=None)
        return ScalarModel.from_backbone(quantized, cache_dir=self.cache_dir, device=self.device,
                                         path=str(self.reward_model_folder))

    @cached_property
    def proxy_reward(self):
        """``(prompts, completions, ended) -> scores``: the reward model scoring text exactly as it was
        trained on it, for PPO, Best-of-N and the evaluator's proxy column."""
        return self.scorer(self.reward_model)

    @cached_property
    def proxy_reward_4bit(self):
        """:attr:`proxy_reward` of the 4-bit reward model (memory-lean PPO)."""
        return self.scorer(self.reward_model_4bit)

    def proxy_for(self, needs: tuple[str, ...]):
        """The proxy reward of the reward model a method declares it needs (4-bit or full); None without one."""
        if "reward_model_4bit" in needs:
            return self.proxy_reward_4bit
        return self.proxy_reward if "reward_model" in needs else None

    def scorer(self, scalar: ScalarModel):
        """``(prompts, completions, ended) -> scores`` of a reward model, tokenized as its training pairs were."""
        scorer = Scorer(scalar, self.recipe.model)

        def score(prompts: list[str], completions: list[str], ended: list[bool] | bool = False) -> np.ndarray:
            return scorer(list(prompts), list(completions), ended).double().numpy()

        return score

    @cached_property
    def reference_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """pi_ref's summed log-probs of every training pair's chosen and rejected completion [N], [N]:
        computed once per pairs and model, shared by every DPO-family run and sweep point."""
        from safetensors.torch import load_file, save_file

        from alignkit.methods.dpo import reference_logprobs

        key = self.reference_logps_key()
        self.artifact_keys["reference_logps"] = key

        def build(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
            chosen, rejected = reference_logprobs(self.reference_for(self.sft), self.train_pairs,
                                                  self.recipe.preferences.append_eos)
            save_file({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, str(path))
            return chosen, rejected

        def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
            tensors = load_file(str(path))
            return tensors["chosen"], tensors["rejected"]

        return self.cache_entry("reference_logps", key, ".safetensors").fetch(build, load)

    def reference_samples(self, temperature: float) -> ReferenceSamples:
        """The reference (SFT) policy's samples on the evaluation prompts at ``temperature``, with their
        gold scores: drawn once per temperature and shared by every method compared against them."""
        key = self.reference_samples_key(temperature)
        self.artifact_keys[f"reference_samples@{temperature:g}"] = key

        def build(path: Path) -> ReferenceSamples:
            cfg = self.recipe.eval
            reference, prompts = self.reference_for(self.sft).as_policy(), self.eval_prompts
            torch.manual_seed(self.seed + 1)  # after loading the SFT model, which reseeds: same samples in any order
            rollout = reference.sample(
                prompts, max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p,
                batch_size=cfg.batch_size, progress=f"sampling reference (T={temperature:g})")
            gold = np.asarray(self.gold(rollout.prompts, rollout.completions), dtype=np.float64)
            samples = ReferenceSamples(rollout.prompts, rollout.completions, rollout.ended, gold)
            write_jsonl(path, samples.records())
            return samples

        entry = self.cache_entry("reference_samples", key, ".jsonl")
        return entry.fetch(build, lambda path: ReferenceSamples.from_records(read_jsonl(path)))

    # ---------------------------------------------------------------------------------------------
    # trajectories

    def checkpoint_hook(self, policy: Policy):
        """``on_step(step)`` for a training loop: every ``eval.every_steps`` optimiser steps (PPO:
        iterations), evaluate the policy on the first ``eval.trajectory_prompts`` evaluation prompts and
        append the point to ``eval/trajectory.jsonl``. None when trajectories are off."""
        every = self.recipe.eval.every_steps
        if not every or self.run_dir is None:
            return None

        def on_step(step: int) -> None:
            self.trained_steps = step  # in the loop's own unit (PPO: iterations), for the closing point
            if step % every == 0:
                self.record_trajectory_point(policy, step)

        return on_step

    def record_trajectory_point(self, policy: Policy, step: int) -> dict:
        """Evaluate ``policy`` as it is now on the trajectory prompts, without disturbing training's RNG."""
        cfg = self.recipe.eval
        reference = self.reference_samples(cfg.temperature).head(cfg.trajectory_prompts)
        devices = [policy.device] if policy.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            point = trajectory_point(policy, self.reference_for(policy), reference, self.gold, cfg,
                                     seed=self.train_seed, step=step)
        append_jsonl(self.run_dir / "eval" / "trajectory.jsonl", point)
        return point
