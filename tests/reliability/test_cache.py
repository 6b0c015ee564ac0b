"""The cache heals: a truncated, unmarked, tampered or half-written cache entry is detected (one-line
notice on stderr) and rebuilt into exactly what it was, and two processes building one entry at once run
one build and both read the complete result."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import cpu_runtime, make_workspace

from alignkit import cache
from alignkit.cache import ENTRY_MARKER as MARKER
from alignkit.cache import CacheEntry, CorruptEntry
from alignkit.recipe import load_recipe
from alignkit.stages.builder import StageBuilder

RECIPE = Path(__file__).resolve().parents[2] / "alignkit" / "recipes" / "dpo_imdb.yaml"
GOLD_TEXTS = ["a wonderful, moving film", "the plot was dull and the acting awful", "it was fine"]


def _recipe(overrides):
    return load_recipe(RECIPE, [*overrides, "device=cpu", "reward_model.max_steps=2"])


def _workspace(recipe, root: Path) -> StageBuilder:
    cache.forget_verified()  # each builder below stands for a new process: nothing is verified yet
    return make_workspace(recipe, root / "run", cache_dir=root / "cache")


def _rm_scores(ws: StageBuilder) -> np.ndarray:
    pairs = ws.heldout_pairs
    return ws.proxy_reward(pairs.prompts[:8], pairs.chosen[:8])


@pytest.fixture(scope="module")
def built(tmp_path_factory, imdb_model_dir):
    """A cache holding every shared stage of a tiny DPO/PPO recipe, and what each stage gave."""
    root = tmp_path_factory.mktemp("healing")
    overrides = [f"model.name_or_path={imdb_model_dir}", "model.max_length=48", "task.max_examples=600",
                 "preferences.n_prompts=16", "preferences.max_new_tokens=8", "eval.n_prompts=8",
                 "eval.max_new_tokens=8"]
    recipe = _recipe(overrides)
    ws = _workspace(recipe, root)
    chosen, rejected = ws.reference_logps
    original = {"pairs": ws.preferences.records(), "gold": ws.gold(GOLD_TEXTS, [""] * 3),
                "rm": _rm_scores(ws), "chosen": chosen.clone(), "rejected": rejected.clone(),
                "samples": ws.reference_samples(1.0).records()}
    return root / "cache", recipe, original


@pytest.fixture
def cache_copy(built, tmp_path):
    """A private cache_copy of the built cache, for one test to damage."""
    source, recipe, original = built
    shutil.copytree(source, tmp_path / "cache")
    return tmp_path, recipe, original


def _only(folder: Path, pattern: str) -> Path:
    (path,) = [p for p in folder.glob(pattern) if MARKER not in p.name]
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _notice(capsys, kind: str, detail: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"alignkit: cache: {kind}/")]
    assert len(lines) == 1, err
    assert detail in lines[0] and lines[0].endswith("; rebuilding"), lines[0]


# ----------------------------------------------------------------------------------------------------------
# (1) corrupt entries of each shared stage are detected and rebuilt into the original


def test_truncated_preferences_are_rebuilt(cache_copy, capsys):
    root, recipe, original = cache_copy
    path = _only(root / "cache" / "preferences", "*.jsonl")
    _truncate(path)
    ws = _workspace(recipe, root)
    assert ws.preferences.records() == original["pairs"]
    _notice(capsys, "preferences", "failed its checksum (")
    assert len(path.read_text().splitlines()) == len(original["pairs"])


def test_truncated_gold_reward_weights_are_rebuilt(cache_copy, capsys):
    root, recipe, original = cache_copy
    folder = _only(root / "cache" / "gold", "imdb-sentiment-*")
    _truncate(folder / "weights.safetensors")
    ws = _workspace(recipe, root)
    np.testing.assert_array_equal(ws.gold(GOLD_TEXTS, [""] * 3), original["gold"])
    _notice(capsys, "gold", "(weights.safetensors: ")


def test_truncated_reward_model_weights_are_rebuilt(cache_copy, capsys):
    root, recipe, original = cache_copy
    folder = _only(root / "cache" / "reward_models", "*")
    _truncate(folder / "model.safetensors")
    ws = _workspace(recipe, root)
    np.testing.assert_allclose(_rm_scores(ws), original["rm"], rtol=0, atol=1e-6)
    _notice(capsys, "reward_models", "(model.safetensors: ")
    assert any(r["stage"] == "reward_model" for r in ws.ctx.log.records)  # retrained
    assert ws.reward_model_summary is not None and (folder / "alignkit_eval.json").is_file()
    assert [p.name for p in (root / "cache" / "reward_models").iterdir()] == [folder.name]  # no temp folders


def test_truncated_reference_logps_are_rebuilt(cache_copy, capsys):
    root, recipe, original = cache_copy
    _truncate(_only(root / "cache" / "reference_logps", "*.safetensors"))
    chosen, rejected = _workspace(recipe, root).reference_logps
    torch.testing.assert_close(chosen, original["chosen"], rtol=0, atol=1e-6)
    torch.testing.assert_close(rejected, original["rejected"], rtol=0, atol=1e-6)
    _notice(capsys, "reference_logps", "failed its checksum (")


# ----------------------------------------------------------------------------------------------------------
# (2) an entry without its marker (a build killed before the end, or an older alignkit) is rebuilt


def test_entry_missing_its_marker_is_rebuilt(cache_copy, capsys):
    root, recipe, original = cache_copy
    samples = _only(root / "cache" / "reference_samples", "*.jsonl")
    samples.with_name(f"{samples.name}.{MARKER}").unlink()
    _truncate(samples)  # as a killed writer would leave it
    rm = _only(root / "cache" / "reward_models", "*")
    (rm / MARKER).unlink()  # whole files, but no proof that the build finished
    ws = _workspace(recipe, root)
    np.testing.assert_allclose(_rm_scores(ws), original["rm"], rtol=0, atol=1e-6)
    _notice(capsys, "reward_models",
            "is incomplete (no CACHE_ENTRY.json marker: written by an older alignkit")
    assert ws.reference_samples(1.0).records() == original["samples"]
    _notice(capsys, "reference_samples", "is incomplete (no CACHE_ENTRY.json marker")
    assert (rm / MARKER).is_file() and samples.with_name(f"{samples.name}.{MARKER}").is_file()


def test_intact_entries_are_loaded_silently(cache_copy, capsys):
    root, recipe, original = cache_copy
    ws = _workspace(recipe, root)
    assert ws.preferences.records() == original["pairs"]
    np.testing.assert_array_equal(_rm_scores(ws), original["rm"])
    assert not ws.ctx.log.records  # loaded, not retrained
    assert "alignkit: cache:" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# (3) two processes building one entry at once


def _slow_build(root: str, counter: str, barrier) -> str:
    """In a child process: wait for the sibling, then build (slowly) or load one entry; return its bytes."""
    barrier.wait(timeout=60)

    def build(folder: Path) -> None:
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        (folder / "data.bin").write_bytes(b"first half ")
        time.sleep(0.5)  # a reader that trusted a half-built entry would see only the first half
        (folder / "data.bin").write_bytes(b"first half, second half")
        (folder / "sub").mkdir()
        (folder / "sub" / "note.txt").write_text("known bytes")

    path = CacheEntry(root, "toy", "shared").ensure(build, cpu_runtime())
    return (path / "data.bin").read_text() + "|" + (path / "sub" / "note.txt").read_text()


def test_concurrent_builders_run_one_build(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / "builds.txt"
    stale = tmp_path / "toy" / ".shared.build-killed"  # left by a builder that was killed
    stale.mkdir(parents=True)
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(_slow_build, [(str(tmp_path), str(counter), barrier)] * 2)
    assert results == ["first half, second half|known bytes"] * 2
    assert len(counter.read_text().splitlines()) == 1  # exactly one build ran
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["shared"]  # no temp folders remain
    entry = CacheEntry(tmp_path, "toy", "shared")
    marker = json.loads(entry.marker_path.read_text())
    assert set(marker["files"]) == {"data.bin", "sub/note.txt"} and marker["kind"] == "toy"
    cache.forget_verified()
    assert entry.load() == entry.path


# ----------------------------------------------------------------------------------------------------------
# (4) tampering that keeps every size is caught by the checksum


@pytest.mark.parametrize("suffix", ["", ".bin"])
def test_flipped_byte_is_detected(tmp_path, capsys, suffix):
    def build(path: Path) -> None:
        (path / "weights.bin" if not suffix else path).write_bytes(bytes(range(256)) * 4)

    entry = CacheEntry(tmp_path, "toy", "tampered", suffix)
    entry.ensure(build, cpu_runtime())
    target = entry.path / "weights.bin" if not suffix else entry.path
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as bit rot would: same size, same mtime
    cache.forget_verified()  # a new process
    with pytest.raises(CorruptEntry, match="checksum mismatch"):
        entry.load()
    entry.ensure(build, cpu_runtime())
    err = capsys.readouterr().err
    assert "failed its checksum (" in err and "checksum mismatch); rebuilding" in err, err
    assert target.read_bytes() == bytes(range(256)) * 4 and entry.load() == entry.path
