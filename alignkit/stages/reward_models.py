"""The reward-model stages of :class:`~alignkit.stages.builder.StageBuilder`, in a module of their own: the
learned (proxy) reward model and the heldout-reward-model judge, trained on the way as shared stages (in a
context of their own) and cached, and the scorers that read text as they were trained on it."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from alignkit.artifacts import Artifact, RewardSettings, reward_needs
from alignkit.errors import AlignkitError
from alignkit.models.scalar_head import ScalarModel, Scorer
from alignkit.registry import METHODS
from alignkit.runfolder import read_manifest
from alignkit.runlog import write_json
from alignkit.stages.keys import JUDGE_SPLIT_JUDGE
from alignkit.stages.stage import stage


class RewardModelStages:
    """The reward-model part of :class:`~alignkit.stages.builder.StageBuilder` (its base class): it reads the
    builder's recipe, keys, pairs, context and cache, and records its cache keys and evaluation there."""

    @contextmanager
    def _shared_stage(self):
        """A shared stage trained on the way runs in a context of its own (own budget, no checkpointer, no
        trajectory), so a run's budget and checkpoints are its own training only."""
        saved, self.ctx = self.ctx, self.ctx.for_shared_stage()
        try:
            yield self.ctx.budget
        finally:
            self.ctx = saved

    @stage
    def reward_model_folder(self) -> Path:
        """The cached reward model's folder: trained with the recipe's ``reward_model`` settings on the shared
        training pairs the first time (and evaluated on the held-out pairs), then reused."""
        folder = self._reward_model_folder("reward_model", self.keys.reward_model_key(), "reward_models",
                                           lambda: self.train_pairs)
        evaluation = folder / "alignkit_eval.json"
        self.reward_model_summary = json.loads(evaluation.read_text()) if evaluation.is_file() else None
        return folder

    @stage
    def judge_reward_model_folder(self) -> Path:
        """The heldout-reward-model judge's folder: the reward model's trainer and settings on the judge split
        (pairs no method learns from), evaluated on the same held-out pairs; cached like the reward model."""
        used = ((read_manifest(self.run_dir) or {}).get("artifact_keys") or {}) if self.run_dir else {}
        if used.get("pair_split", self.keys.split_key()) != self.keys.split_key():  # eval of an older run
            raise AlignkitError(f"{self.run_dir}: eval.judge: {JUDGE_SPLIT_JUDGE} trains on a judge split of "
                                "the pairs this run learned from; retrain it with that judge "
                                "(alignkit compare does)")
        return self._reward_model_folder("judge_reward_model", self.keys.judge_reward_model_key(),
                                         "judge_reward_models", lambda: self.judge_pairs)

    def _reward_model_folder(self, name: str, key: str, kind: str, pairs) -> Path:
        self.artifact_keys[name] = key

        def build(tmp: Path) -> None:
            fit = METHODS.entry("reward_model").meta["fit_on"]  # the reward model's trainer, on these pairs
            with self._shared_stage() as budget:
                trained = fit(self, self.recipe.method_config("reward_model"), pairs(), self.heldout_pairs)
            summary, _ = trained.evaluate(self)
            summary["budget"] = budget.as_dict()
            trained.save(tmp)
            write_json(tmp / "alignkit_eval.json", summary)

        return self.cache_entry(kind, key).ensure(build, self.runtime)

    @stage
    def reward_model(self) -> ScalarModel:
        """The learned (proxy) reward model: trained with the recipe's ``reward_model`` settings on the
        shared training pairs the first time, then loaded from the cache."""
        return ScalarModel.from_backbone(self.recipe.model, cache_dir=self.cache_dir, runtime=self.runtime,
                                         path=str(self.reward_model_folder))

    @stage
    def reward_model_4bit(self) -> ScalarModel:
        """The same reward model with NF4 4-bit backbone weights (bitsandbytes): a frozen scorer in about a
        quarter of the memory, for memory-lean PPO."""
        quantized = dataclasses.replace(self.recipe.model, load_in_4bit=True, load_in_8bit=False, lora=None)
        return ScalarModel.from_backbone(quantized, cache_dir=self.cache_dir, runtime=self.runtime,
                                         path=str(self.reward_model_folder))

    @stage
    def proxy_reward(self):
        """``(prompts, completions, ended) -> scores``: the reward model scoring text exactly as it was
        trained on it, for PPO, Best-of-N and the evaluator's proxy column."""
        return self.scorer(self.reward_model)

    @stage
    def judge_reward(self):
        """``(prompts, completions, ended) -> scores`` of the heldout-reward-model judge."""
        judge = ScalarModel.from_backbone(self.recipe.model, cache_dir=self.cache_dir, runtime=self.runtime,
                                          path=str(self.judge_reward_model_folder))
        return self.scorer(judge)

    @stage
    def proxy_reward_4bit(self):
        """:attr:`proxy_reward` of the 4-bit reward model (memory-lean PPO)."""
        return self.scorer(self.reward_model_4bit)

    def proxy_for(self, needs: tuple[Artifact, ...]):
        """The proxy reward of the reward model a method declares it needs (4-bit or full); None without
        one."""
        if Artifact.REWARD_MODEL_4BIT in needs:
            return self.proxy_reward_4bit
        return self.proxy_reward if Artifact.REWARD_MODEL in needs else None

    def reward_for(self, settings: RewardSettings):
        """The one decision of what an RL method or Best-of-N maximises: the proxy reward of the shared reward
        model (4-bit when the settings ask), or None when it maximises the gold reward (:attr:`gold`)."""
        return self.proxy_for(reward_needs(settings))

    def scorer(self, scalar: ScalarModel):
        """``(prompts, completions, ended) -> scores`` of a reward model, tokenized as its training pairs
        were."""
        scorer = Scorer(scalar, self.recipe.model)

        def score(prompts: list[str], completions: list[str], ended: list[bool] | bool = False) -> np.ndarray:
            return scorer(list(prompts), list(completions), ended).double().numpy()

        return score

