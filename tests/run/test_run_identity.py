"""Which finished runs are still current: settings added to recipes later, at the value older runs were
trained with, and settings that only change how a step is computed, never make a run look different."""

from __future__ import annotations

import copy
from pathlib import Path

from tiny import write_pairs  # tests/tiny.py

from alignkit.config import to_dict
from alignkit.recipe import load_recipe
from alignkit.run.decision import training_identity

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _resolved(name: str, overrides=()) -> dict:
    return to_dict(load_recipe(RECIPES / name, list(overrides)))


def test_a_run_recorded_before_new_keys_is_the_same_run():
    today = _resolved("ppo_imdb.yaml", ["ppo.value_init=policy"])
    older = copy.deepcopy(today)
    for key in ("precision", "gold_reward_options"):
        del older[key]
    del older["methods"]["ppo"]["reward_model_4bit"]
    del older["methods"]["ppo"]["gradient_accumulation_steps"]
    assert training_identity(older) == training_identity(today)


def test_new_keys_at_other_values_and_accumulation():
    base = training_identity(_resolved("dpo_imdb.yaml"))
    assert training_identity(_resolved("dpo_imdb.yaml", ["precision=bf16"])) != base
    assert training_identity(_resolved("dpo_imdb.yaml", ["dpo.gradient_accumulation_steps=4"])) == base
    assert training_identity(_resolved("dpo_imdb.yaml", ["dpo.beta=0.5"])) != base


def test_append_eos_is_a_training_setting_of_your_data_only(tmp_path):
    imdb = _resolved("dpo_imdb.yaml")
    older = copy.deepcopy(imdb)
    older["preferences"]["append_eos"] = False  # recorded under the old default: generated pairs ignore it
    assert training_identity(older) == training_identity(imdb)
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    mine = _resolved("dpo_imdb.yaml", [f"preferences.source={pairs}", "task.dataset=preferences",
                                       "gold_reward=heldout-reward-model"])
    older = copy.deepcopy(mine)
    older["preferences"]["append_eos"] = False  # trained without trl's EOS: another run
    assert training_identity(older) != training_identity(mine)
