"""Shipped builtin models (alignkit.models.shipped): loaded instead of trained when they were made by the
recipe asked for, checked file by file, data-only, and keyed in the caches by their checksums; tiny models
built here."""

from __future__ import annotations

import json

import pytest

import alignkit.models.builtin as builtin
import alignkit.models.shipped as shipped
from alignkit.config import fingerprint
from alignkit.context import RunContext
from alignkit.data.imdb import imdb_task
from alignkit.data.task import TaskConfig
from alignkit.errors import AlignkitError
from alignkit.models.builtin import TinyLMRecipe, build_tiny_gpt2
from alignkit.models.shipped import MANIFEST, describe, sha256, shipped_identity, shipped_model
from alignkit.recipe import load_recipe
from alignkit.registry import MODELS
from alignkit.runlog import write_json
from alignkit.runtime import Runtime
from alignkit.stages.keys import StageKeys

SMALL = TinyLMRecipe(n_embd=16, n_layer=1, n_head=2, n_positions=32, steps=3, batch_size=4, vocab_size=300,
                     tokenizer_texts=120, train_texts=24, window_tokens=16)


def build_small(folder):
    texts = imdb_task(TaskConfig(max_examples=300)).train_texts
    build_tiny_gpt2(texts, SMALL, folder, RunContext(Runtime("cpu").fp32()))


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory):
    """A package-like shipped folder holding a small tiny-gpt2-imdb made by ``SMALL``."""
    root = tmp_path_factory.mktemp("shipped")
    build_small(root / builtin.ALIAS)
    write_json(root / builtin.ALIAS / MANIFEST, describe(root / builtin.ALIAS, fingerprint(SMALL), {}, 1))
    return root


def test_a_build_is_byte_for_byte_the_same_when_repeated(tmp_path):
    build_small(tmp_path / "a")
    build_small(tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert [sha256(tmp_path / "a" / n) for n in names] == [sha256(tmp_path / "b" / n) for n in names]


def test_the_shipped_model_is_used_only_for_the_recipe_that_made_it(shipped_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED", shipped_root)
    built = []
    monkeypatch.setattr(builtin, "make_tiny_gpt2_imdb", lambda folder, runtime, recipe: built.append(recipe)
                        or (folder / "config.json").write_text("{}"))
    assert builtin.tiny_gpt2_imdb(tmp_path, Runtime("cpu"), SMALL) == shipped_root / builtin.ALIAS
    assert built == []  # loaded, not trained
    other = TinyLMRecipe(steps=4)
    assert builtin.tiny_gpt2_imdb(tmp_path, Runtime("cpu"), other).parent == tmp_path / "models"
    assert built == [other]


def test_a_damaged_or_padded_shipped_folder_is_one_error_line_naming_the_file(shipped_root, tmp_path):
    root = tmp_path / "copy"
    folder = root / builtin.ALIAS
    folder.mkdir(parents=True)
    for path in (shipped_root / builtin.ALIAS).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    assert shipped_model(builtin.ALIAS, fingerprint(SMALL), root) == folder
    assert shipped_model(builtin.ALIAS, "another recipe", root) is None
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(AlignkitError, match=r"pytorch_model\.bin: not listed in alignkit_shipped\.json"):
        shipped_model(builtin.ALIAS, fingerprint(SMALL), root)
    (folder / "pytorch_model.bin").unlink()
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(AlignkitError, match=r"model\.safetensors: missing or not the shipped bytes"):
        shipped_model(builtin.ALIAS, fingerprint(SMALL), root)


def test_a_pickle_file_is_refused_when_the_manifest_is_written(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(AlignkitError, match=r"pytorch_model\.bin: not a data-only file"):
        describe(tmp_path, "x", {}, 1)


def test_stage_keys_follow_the_shipped_files_checksums(shipped_root, tmp_path, monkeypatch):
    recipe = load_recipe(None, ["method=dpo", "model.name_or_path=builtin:tiny-gpt2-imdb"])
    monkeypatch.setattr(shipped, "SHIPPED", tmp_path / "none")
    local = StageKeys(recipe, tmp_path).all()  # nothing shipped: the keys of a local build, as before
    monkeypatch.setattr(shipped, "SHIPPED", shipped_root)
    monkeypatch.setitem(MODELS.entry(builtin.ALIAS).meta, "identity",
                        lambda: shipped_identity(builtin.ALIAS, fingerprint(SMALL)))
    first = StageKeys(recipe, tmp_path).all()
    manifest = json.loads((shipped_root / builtin.ALIAS / MANIFEST).read_text())
    monkeypatch.setattr(shipped, "_manifest", lambda alias, root: {**manifest, "files": {
        **manifest["files"], "model.safetensors": "0" * 64}})  # other weights shipped
    second = StageKeys(recipe, tmp_path).all()
    assert all(local[k] != first[k] != second[k] != local[k] for k in local)


@pytest.mark.parametrize("alias", ["tiny-gpt2-imdb", "tiny-chat-support"])
def test_the_packaged_builtins_verify_and_hold_data_only(alias):
    folder = shipped.SHIPPED / alias
    if not (folder / MANIFEST).is_file():
        pytest.skip(f"{alias} is not shipped in this checkout (scripts/make_builtin_models.py)")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert shipped_model(alias, manifest["made_by"]) == folder
    assert all(name.endswith((".safetensors", ".json", ".jinja", ".txt")) for name in manifest["files"])
    from alignkit.models import tiny_chat
    made_by = fingerprint(TinyLMRecipe()) if alias == builtin.ALIAS else tiny_chat.made_by()
    assert manifest["made_by"] == made_by  # the default recipe (and data) of today's builder made it
