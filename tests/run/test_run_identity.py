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


def test_a_run_recorded_before_the_schedule_settings_is_the_same_run():
    """lr_schedule and warmup_ratio (and GRPO/RLOO's warmup_steps) at the values runs were trained with
    before they existed leave a run as it was; any other value is another run. GRPO and RLOO ran trl's
    default, linear decay to 0, so theirs is "linear", not alignkit's linear_to_tenth."""
    added = {"dpo": ("lr_schedule", "warmup_ratio"), "ppo": ("lr_schedule",),
             "grpo": ("lr_schedule", "warmup_steps", "warmup_ratio")}
    for method, keys in added.items():
        today = _resolved(f"{method}_imdb.yaml")
        older = copy.deepcopy(today)
        for key in keys:
            del older["methods"][method][key]
        assert training_identity(older) == training_identity(today)
        other = _resolved(f"{method}_imdb.yaml", [f"{method}.lr_scheduler_type=cosine"])
        assert training_identity(other) != training_identity(older)
    ratio = _resolved("dpo_imdb.yaml", ["dpo.warmup_ratio=0.1"])
    assert training_identity(ratio) != training_identity(_resolved("dpo_imdb.yaml"))
    grpo = _resolved("grpo_imdb.yaml")
    grpo["methods"]["grpo"]["lr_schedule"] = "linear_to_tenth"  # not what older GRPO runs ran
    older = copy.deepcopy(grpo)
    del older["methods"]["grpo"]["lr_schedule"]
    assert training_identity(older) != training_identity(grpo)
