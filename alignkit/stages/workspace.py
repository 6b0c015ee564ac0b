"""What a method or judge reads of one run: a narrow, read-only view of the shared stages and the run's
context. :class:`~alignkit.stages.builder.StageBuilder` builds and fills them; methods and judges only read,
so every method of a comparison sees the same objects. A gold reward hands what the manifest records of it
back to the builder as a :class:`RecordedReward`, instead of writing it anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from alignkit.artifacts import RewardSettings
from alignkit.context import Budget, RunContext
from alignkit.data.preferences import PreferenceData
from alignkit.data.task import Task
from alignkit.models.policy import Policy, Reference
from alignkit.models.scalar_head import ScalarModel
from alignkit.recipe import Recipe
from alignkit.runtime import Runtime


class Workspace(Protocol):
    """The shared stages and context a method (``train(ws, cfg)``) or judge (``build(ws)``) receives, built on
    first read; the builder's docstrings say how each is made."""

    @property
    def recipe(self) -> Recipe: ...

    @property
    def ctx(self) -> RunContext:
        """The context training runs in (a shared stage built on the way gets its own)."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def budget(self) -> Budget: ...

    @property
    def cache_dir(self) -> Path: ...

    @property
    def train_seed(self) -> int: ...

    @property
    def task(self) -> Task: ...

    @property
    def sft(self) -> Policy: ...

    @property
    def gold(self) -> Callable: ...

    @property
    def train_pairs(self) -> PreferenceData: ...

    @property
    def heldout_pairs(self) -> PreferenceData: ...

    @property
    def reference_logps(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    @property
    def reward_model(self) -> ScalarModel: ...

    @property
    def proxy_reward(self) -> Callable: ...

    @property
    def judge_reward(self) -> Callable: ...

    @property
    def judge(self) -> Callable:
        """What decides win rates (a judge's load-time check asks it a probe question)."""

    @property
    def eval_prompts(self) -> list[str]:
        """The prompts every method is evaluated on (the judge must fit the longest)."""

    def tokenizer_loader(self) -> Callable:
        """``() -> tokenizer`` of the policy, loaded only when called."""

    def load_policy(self) -> Policy: ...

    def reference_for(self, policy: Policy) -> Reference: ...

    def prompts(self, split: str, n: int) -> list[str]: ...

    def reward_for(self, settings: RewardSettings) -> Callable | None: ...


@dataclass(frozen=True)
class RecordedReward:
    """What a gold reward's builder may return instead of its bare score function: the function, and what the
    run's manifest records of it (``artifact_keys["gold_reward"]``, ``gold_reward_meta``)."""

    score: Callable
    key: str
    meta: dict
