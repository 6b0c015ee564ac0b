"""The tags in the shared stages' cache keys are the ones ``runfolder.FORMATS`` lists, each with why."""

from __future__ import annotations

import inspect
import re

import pytest
from tiny import write_pairs  # tests/tiny.py

import alignkit.stages.keys as keys
from alignkit.errors import ConfigError
from alignkit.runformat import CHANGES


def test_every_tag_in_a_stage_key_is_in_the_format_table():
    source, listed = inspect.getsource(keys), {c.name for c in CHANGES if c.kind == "tag"}
    assert {t for t in listed if f'"{t}"' not in source} == set()  # listed, but no key carries it
    assert set(re.findall(r'"([a-z-]+-\d+)"', source)) - listed == set()  # a versioned tag not listed
    assert all(c.reason for c in CHANGES)


def test_append_eos_keys_your_data_only(tmp_path):
    """append_eos became true by default (trl's EOS): the stages of your data built under the old default are
    keyed apart, never reused with the new meaning; generated pairs, which end where the sampler stopped
    whatever append_eos says, keep their keys (the IMDb caches stay valid)."""
    from alignkit.recipe import load_recipe
    from alignkit.stages.keys import StageKeys

    def stage_keys(*sets: str) -> dict:
        keys = StageKeys(load_recipe("dpo_imdb", list(sets)), tmp_path).all()
        return {k: keys[k] for k in ("preferences", "reward_model", "reference_logps")}

    with pytest.raises(ConfigError, match="preferences.append_eos: false applies to your data"):
        stage_keys("preferences.append_eos=false")
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    mine = (f"preferences.source={pairs}", "task.dataset=preferences", "gold_reward=heldout-reward-model")
    new, old = stage_keys(*mine), stage_keys(*mine, "preferences.append_eos=false")
    assert new["preferences"] == old["preferences"]  # the same rows are read; they tokenize differently
    assert new["reward_model"] != old["reward_model"] and new["reference_logps"] != old["reference_logps"]


def test_the_reward_models_schedule_settings_keep_its_older_keys(tmp_path):
    """The reward model's key, with lr_schedule and warmup_ratio at their defaults, is the key it had before
    they existed (its settings fingerprinted without them), so cached reward models are reused; set, they key
    a new one. Each is listed in FORMATS, as a setting and as a part left out of the key."""
    from alignkit.config import fingerprint, identity_dict
    from alignkit.recipe import load_recipe
    from alignkit.stages.keys import KEYED_SINCE, StageKeys

    assert all({("option", k), ("key", k)} <= {(c.kind, c.name) for c in CHANGES} for k in KEYED_SINCE)
    stage_keys = StageKeys(load_recipe("ppo_imdb"), tmp_path)
    settings = identity_dict(stage_keys.recipe.method_config("reward_model"))
    assert {"lr_schedule", "warmup_ratio", "lr_schedule_steps"} <= set(settings)
    # as keys were made before the two existed (lr_schedule_steps, older, is keyed)
    before = {k: v for k, v in settings.items() if k not in ("lr_schedule", "warmup_ratio")}
    older = fingerprint(stage_keys.split_key(), before, *stage_keys.model_identity,
                        stage_keys.recipe.preferences.eos_identity, "rm-2")
    assert stage_keys.reward_model_key() == older
    for change in ("reward_model.lr_scheduler_type=cosine", "reward_model.warmup_ratio=0.1"):
        changed = StageKeys(load_recipe("ppo_imdb", [change]), tmp_path)
        assert changed.reward_model_key() != older
        assert changed.pairs_key() == stage_keys.pairs_key()
