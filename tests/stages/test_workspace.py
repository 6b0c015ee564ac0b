"""The workspace (alignkit.stages.workspace): its public constructor, what may be provided instead of built, the
shared artifacts a method declares, and the one decision of which reward an RL method maximises."""

from __future__ import annotations

import numpy as np
import pytest

from alignkit.artifacts import Artifact, RewardSettings
from alignkit.data.preferences import PreferenceData
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe
from tiny import make_workspace

PAIRS = PreferenceData(prompts=["a", "a", "b", "b", "c", "c"], chosen=["x", "y", "x", "y", "x", "y"],
                       rejected=["z", "w", "z", "w", "z", "w"], group=[0, 0, 1, 1, 2, 2])


@pytest.fixture
def ws(tmp_path, imdb_model_dir):
    recipe = load_recipe(None, ["method=dpo", f"model.name_or_path={imdb_model_dir}", "device=cpu",
                                "preferences.heldout_fraction=0.34"])
    return make_workspace(recipe, cache_dir=tmp_path / "cache")


def test_provide_takes_known_artifacts_and_names_the_rest(ws):
    gold = lambda prompts, completions: np.zeros(len(prompts))  # noqa: E731
    assert ws.provide(gold=gold, preferences=PAIRS).gold is gold
    with pytest.raises(AlignkitError, match="cannot provide pairs \\(can: gold, judge, preferences, proxy_reward"):
        ws.provide(pairs=PAIRS)


def test_resolving_the_training_pairs_splits_them_by_prompt_group(ws):
    ws.provide(preferences=PAIRS)
    assert not ws.has_pairs
    train = ws.resolve(Artifact.TRAIN_PAIRS)
    assert ws.has_pairs and train is ws.train_pairs
    assert len(train) + len(ws.heldout_pairs) == len(PAIRS)
    assert not set(train.group) & set(ws.heldout_pairs.group)  # a prompt's pairs sit on one side only


def test_reward_for_is_none_for_gold_and_the_asked_reward_model_otherwise(ws):
    full, quantized = object(), object()
    ws.provide(proxy_reward=full, proxy_reward_4bit=quantized)  # stand-ins for the built scorers
    assert ws.reward_for(RewardSettings(reward="gold")) is None
    assert ws.reward_for(RewardSettings()) is full
    assert ws.reward_for(RewardSettings(reward_model_4bit=True)) is quantized


def test_a_shared_stage_counts_into_its_own_budget(ws):
    ws.budget.steps = 3
    with ws._shared_stage() as budget:
        budget.steps += 7
        assert ws.budget is budget and ws.ctx.checkpointer is None and ws.ctx.trace is None
    assert ws.budget.steps == 3
