"""The IMDb task's shipped stages (alignkit.stages.shipped_stages): loaded instead of built when the stage's
key is the one they were made for, and keyed by their checksums downstream; one error line when a byte
changed; built as before under any other key (another seed); the packaged ones verify and are the bundled
recipes'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny import make_workspace

import alignkit.stages.shipped_stages as shipped_stages
from alignkit.errors import AlignkitError
from alignkit.models.shipped import MANIFEST, describe
from alignkit.recipe import load_recipe
from alignkit.rewards.builtin import imdb_gold_key
from alignkit.rewards.sentiment import SentimentClassifier
from alignkit.runlog import write_json, write_jsonl
from alignkit.stages.keys import StageKeys
from alignkit.stages.shipped_stages import GOLD, LOGPS_FILE, PAIRS, PAIRS_FILE, REFERENCE_LOGPS, shipped_stage

SMALL = ["model.max_length=48", "task.max_examples=600", "preferences.n_prompts=6",
         "preferences.max_new_tokens=6", "eval.n_prompts=4", "eval.max_new_tokens=6", "device=cpu"]
ROWS = [{"prompt": f"Review {i}:", "chosen": " a good film", "rejected": " a bad film", "group": i}
        for i in range(10)]
DOWNSTREAM = ("preferences", "pair_split", "reward_model", "reference_logps")


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """An empty package-like folder of shipped stages, in place of the package's."""
    monkeypatch.setattr(shipped_stages, "ASSETS", tmp_path / "assets")
    return tmp_path / "assets"


@pytest.fixture
def recipe(imdb_model_dir):
    return load_recipe("dpo_imdb", [*SMALL, f"model.name_or_path={imdb_model_dir}"])


def ship(assets, asset: str, made_by: str, write) -> None:
    """Ship ``asset`` made for the key ``made_by``: ``write(folder)`` writes its files, then its manifest."""
    folder = assets / asset
    folder.mkdir(parents=True)
    write(folder)
    write_json(folder / MANIFEST, describe(folder, made_by, {}, 1, ()))


def test_shipped_pairs_load_for_their_key_and_key_every_stage_built_on_them(assets, recipe, tmp_path):
    cache = tmp_path / "cache"
    local = StageKeys(recipe, cache).all()
    ship(assets, PAIRS, StageKeys(recipe, cache).pairs_made_by(),
         lambda folder: write_jsonl(folder / PAIRS_FILE, ROWS))
    ws = make_workspace(recipe, cache_dir=cache)
    assert ws.preferences.records() == ROWS
    assert not (cache / "preferences").exists()  # nothing sampled, nothing cached
    keys = StageKeys(recipe, cache).all()
    assert ws.artifact_keys["preferences"] == keys["preferences"]
    assert [k for k in DOWNSTREAM if keys[k] == local[k]] == []


def test_a_changed_or_added_file_is_refused_in_one_line(assets, recipe, tmp_path):
    ship(assets, PAIRS, StageKeys(recipe, tmp_path).pairs_made_by(),
         lambda folder: write_jsonl(folder / PAIRS_FILE, ROWS))
    path = assets / PAIRS / PAIRS_FILE
    path.write_bytes(path.read_bytes().replace(b"good", b"goad", 1))
    with pytest.raises(AlignkitError) as err:
        make_workspace(recipe, cache_dir=tmp_path).preferences
    assert str(err.value) == (f"{path}: missing or not the shipped bytes (sha256 differs from {MANIFEST}); "
                              "reinstall alignkit or run scripts/make_builtin_models.py")
    write_jsonl(path, ROWS)  # the shipped bytes again
    (assets / PAIRS / "extra.pkl").write_bytes(b"pickle")
    with pytest.raises(AlignkitError, match=r"extra\.pkl: not listed in alignkit_shipped\.json") as err:
        make_workspace(recipe, cache_dir=tmp_path).preferences
    assert "\n" not in str(err.value)


def test_another_seed_builds_its_own_pairs_under_the_keys_it_had(assets, recipe, imdb_model_dir, tmp_path):
    ship(assets, PAIRS, StageKeys(recipe, tmp_path).pairs_made_by(),
         lambda folder: write_jsonl(folder / PAIRS_FILE, ROWS))
    other = load_recipe("dpo_imdb", [*SMALL, f"model.name_or_path={imdb_model_dir}", "seed=1"])
    keys = StageKeys(other, tmp_path)
    assert keys.pairs_key() == keys.pairs_made_by()  # nothing shipped for it: its key as before
    ws = make_workspace(other, cache_dir=tmp_path)
    assert ws.preferences.records() != ROWS and len(ws.preferences) > 0
    assert (tmp_path / "preferences" / f"{keys.pairs_key()}.jsonl").is_file()  # sampled and cached


def test_shipped_reference_logps_load_for_their_key(assets, recipe, tmp_path):
    chosen, rejected = torch.arange(6, dtype=torch.float32) - 10, torch.arange(6, dtype=torch.float32) - 20
    local = StageKeys(recipe, tmp_path).reference_logps_key()
    ship(assets, REFERENCE_LOGPS, StageKeys(recipe, tmp_path).reference_logps_made_by(),
         lambda folder: save_file({"chosen": chosen, "rejected": rejected}, str(folder / LOGPS_FILE)))
    ws = make_workspace(recipe, cache_dir=tmp_path)
    got = ws.reference_logps
    assert torch.equal(got[0], chosen) and torch.equal(got[1], rejected)
    assert not (tmp_path / "reference_logps").exists()
    assert ws.artifact_keys["reference_logps"] != local


def test_shipped_gold_weights_score_and_key_the_pairs_they_label(assets, recipe, tmp_path):
    texts = ["a wonderful moving film", "a dull awful film", "great cast", "terrible plot"]
    classifier = SentimentClassifier.fit(texts, [1, 0, 1, 0], texts, [1, 0, 1, 0])
    pairs_key = StageKeys(recipe, tmp_path).pairs_key()
    ship(assets, GOLD, imdb_gold_key(recipe.task), classifier.save)
    ws = make_workspace(recipe, cache_dir=tmp_path)
    np.testing.assert_array_equal(ws.gold(["a"], [" wonderful film"]), classifier.score(["a wonderful film"]))
    assert not (tmp_path / "gold").exists()  # loaded, not fit
    assert StageKeys(recipe, tmp_path).pairs_key() != pairs_key


@pytest.mark.parametrize("name", ["dpo_imdb", "ppo_imdb"])
def test_the_packaged_stages_verify_and_are_the_bundled_recipes(name, tmp_path):
    if not (shipped_stages.ASSETS / PAIRS / MANIFEST).is_file():
        pytest.skip("the IMDb stages are not shipped in this checkout (scripts/make_builtin_models.py)")
    recipe = load_recipe(name)
    keys = StageKeys(recipe, tmp_path)
    assert shipped_stage(GOLD, imdb_gold_key(recipe.task)) is not None
    assert shipped_stage(PAIRS, keys.pairs_made_by()) is not None
    assert shipped_stage(REFERENCE_LOGPS, keys.reference_logps_made_by()) is not None
