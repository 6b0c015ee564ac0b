"""Everything that reads a run folder (``run`` resuming, ``compare``, ``eval``, ``report``) survives what
earlier
runs left behind: corrupt or empty manifests, foreign-version folders, missing checkpoint files, failed or
running runs, a report folder, names too long for a folder and a full disk. Each ends in one line naming the
file and what to do, a non-zero exit, and nothing of the user's changed (sha256 of every file). And a
comparison rerun with a changed training setting never replaces finished runs without ``--overwrite``."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from reliability_helpers import RECIPES, summary, weights
from test_cli import assert_one_line_error

import alignkit.runfolder as runfolder
import alignkit.runformat as runformat
import alignkit.runlog as runlog
from alignkit.checkpoint import Checkpointer
from alignkit.cli import main
from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe

FAST = ["eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=8", "dpo.max_steps=2",
        "dpo.batch_size=8",
        "sft.max_steps=2"]


def sets(overrides, *extra, method=None):
    """--set arguments; for one ``method``'s run only the sections it reads (run refuses another's)."""
    fast = [o for o in FAST if method is None or o.split(".")[0] in (method, "eval")]
    return [a for o in [*overrides, *fast, *extra] for a in ("--set", o)]


def cli(*args):
    return CliRunner().invoke(main, [*map(str, args)], catch_exceptions=False)


def sha256s(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its sha256 (what "nothing of the user's changed" means here)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, compare_overrides, cache_dir):
    """A finished two-run comparison (DPO and SFT) on the tiny model; each test damages its own copy."""
    import os

    os.environ["ALIGNKIT_CACHE"] = str(cache_dir)
    overrides = list(compare_overrides)
    out = tmp_path_factory.mktemp("folders") / "cmp"
    result = cli("compare", "dpo", "sft", "--out", out, *sets(overrides))
    assert result.exit_code == 0, result.output
    return out, overrides


@pytest.fixture
def cmp(finished, tmp_path):
    out, overrides = finished
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    return copy, overrides


def rerun(folder, overrides, *extra):
    return cli("compare", "dpo", "sft", "--out", folder, *sets(overrides), *extra)


# -------------------------------------------------------------------------------------------------
# compare never replaces finished runs without --overwrite


def test_changed_seed_rerun_leaves_finished_runs_untouched(cmp):
    """The data loss: `compare --set seed=1` into a finished comparison retrained both runs in place."""
    folder, overrides = cmp
    before = sha256s(folder)
    result = rerun(folder, overrides, "--set", "seed=1")
    assert_one_line_error(result, "finished run(s) this comparison would retrain and replace",
                          "dpo (seed: 0 -> 1)", "sft (seed: 0 -> 1)", "pass --overwrite")
    assert sha256s(folder) == before


def test_a_finished_run_without_its_model_is_not_reused(cmp):
    folder, overrides = cmp
    (folder / "runs" / "dpo" / "model" / "model.safetensors").unlink()
    before = sha256s(folder)
    assert_one_line_error(rerun(folder, overrides),
                          "dpo (its saved model cannot be reused (model/model.safetensors: missing))",
                          "pass --overwrite")
    assert sha256s(folder) == before


def test_a_sweep_that_matches_no_entry_is_an_error(tmp_path, tiny_overrides):
    result = cli("compare", "dpo", "--sweep", "ppo.nosuch=1,2", "--out", tmp_path / "cmp",
                 *sets(tiny_overrides))
    assert_one_line_error(result, "compare: --sweep ppo.nosuch=1,2: applies to no entry",
                          "the entries' methods: dpo")
    assert not (tmp_path / "cmp").exists()


# -------------------------------------------------------------------------------------------------
# corrupt, empty and foreign manifests


def damage(path: Path, how: str) -> None:
    if how == "empty":
        path.write_text("")
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how, fragment", [("truncated", "not valid JSON (truncated or corrupt"),
                                           ("empty", "empty (a write was cut short?)")])
@pytest.mark.parametrize("command", ["run", "compare", "eval", "report"])
def test_a_corrupt_manifest_is_one_line_naming_it(cmp, tmp_path, command, how, fragment):
    folder, overrides = cmp
    manifest = folder / "runs" / "dpo" / "manifest.json"
    damage(manifest, how)
    before = sha256s(folder)
    args = {"run": ["run", RECIPES / "dpo_imdb.yaml", "--out", folder / "runs" / "dpo", *sets(overrides,
                                                                                              method="dpo")],
            "compare": ["compare", "dpo", "sft", "--out", folder, *sets(overrides)],
            "eval": ["eval", folder / "runs" / "dpo"],
            "report": ["report", folder, "--out", tmp_path / "report"]}[command]
    hint = {"run": "pass --overwrite to start the run over", "compare": "pass --overwrite to train it again",
            "eval": "rerun the run with --overwrite",
            "report": "with --overwrite) to train it again"}[command]
    assert_one_line_error(cli(*args), f"{manifest}: {fragment}", hint)
    assert sha256s(folder) == before
    if command == "report":  # the other run is still reported, and the broken one named
        index = json.loads((tmp_path / "report" / "compare.json").read_text())
        assert [e["label"] for e in index["entries"]] == ["sft"]


def test_report_of_a_run_with_a_corrupt_summary_names_it(cmp, tmp_path):
    folder, _ = cmp
    damage(folder / "runs" / "dpo" / "eval" / "summary.json", "truncated")
    before = sha256s(folder)
    assert_one_line_error(cli("report", folder / "runs" / "dpo", "--out", tmp_path / "report"),
                          f"{folder / 'runs' / 'dpo' / 'eval' / 'summary.json'}: not valid JSON")
    assert sha256s(folder) == before and not (tmp_path / "report").exists()


@pytest.mark.parametrize("fmt, version, fragment", [
    (2, "0.9.0",
     "run format 2, written by alignkit 0.9.0; this alignkit (0.1.0) reads format 1 only: read it "
                 "with alignkit 0.9.0"),
    (None, "0.0.1",
     "run format unknown, written by alignkit 0.0.1; this alignkit (0.1.0) reads format 1 only"),
])
@pytest.mark.parametrize("command", ["report", "eval"])
def test_a_run_folder_of_another_version_names_it(cmp, tmp_path, fmt, version, fragment, command):
    folder, _ = cmp
    path = folder / "runs" / "dpo" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.pop("alignkit_run")
    manifest.update({"versions": {**manifest["versions"], "alignkit": version},
                     **({"alignkit_run": fmt} if fmt else {})})
    path.write_text(json.dumps(manifest))
    before = sha256s(folder)
    args = ["report", folder / "runs" / "dpo", "--out", tmp_path / "report"] if command == "report" \
        else ["eval", folder / "runs" / "dpo"]
    assert_one_line_error(cli(*args), f"{path}: {fragment}")
    assert sha256s(folder) == before


def test_a_format_added_to_the_table_upgrades_older_folders_in_memory(monkeypatch, tmp_path):
    """Once ``FORMATS`` has a format 2, a format-1 manifest reads, upgraded in memory (the file as it was);
    a format newer than the table is refused in one line naming the alignkit that wrote it."""
    upgrade = lambda manifest: {**manifest, "upgraded": True}  # noqa: E731
    monkeypatch.setattr(runfolder, "FORMATS", (*runfolder.FORMATS, runformat.Format(2, "a test", upgrade)))
    monkeypatch.setattr(runfolder, "RUN_FORMAT", 2)
    path = tmp_path / "manifest.json"
    old = {"alignkit_run": 1, "status": "done", "name": "x", "method": "dpo", "recipe": {"method": "dpo",
                                                                                         "eval": {}},
           "versions": {"alignkit": "0.1.0"}}
    path.write_text(json.dumps(old))
    assert runfolder.read_run(tmp_path).manifest == {**old, "alignkit_run": 2, "upgraded": True}
    assert json.loads(path.read_text()) == old
    path.write_text(json.dumps({**old, "alignkit_run": 3, "versions": {"alignkit": "0.9.0"}}))
    with pytest.raises(runfolder.RunFolderError) as refused:
        runfolder.read_run(tmp_path)
    assert str(refused.value) == (f"{path}: run format 3, written by alignkit 0.9.0; this alignkit (0.1.0) "
                                  "reads formats 1 to 2: read it with alignkit 0.9.0, or rerun with "
                                  "--overwrite to train it again")


def test_report_of_a_report_is_refused(cmp, tmp_path):
    folder, _ = cmp
    assert cli("report", folder, "--out", tmp_path / "first").exit_code == 0
    before = sha256s(tmp_path / "first")
    assert_one_line_error(cli("report", tmp_path / "first", "--out", tmp_path / "second"),
                          f"{tmp_path / 'first'}: a report folder", "not a run or comparison folder")
    assert sha256s(tmp_path / "first") == before and not (tmp_path / "second").exists()


# -------------------------------------------------------------------------------------------------
# eval of runs that are not finished


@pytest.mark.parametrize("status, fragment", [
    ("failed", "eval: the run failed (RuntimeError: boom); rerun `alignkit run` with its recipe"),
    ("running", "eval: the run is still running (pid {pid} on"),
    ("interrupted", "eval: the run was interrupted before it finished; rerun `alignkit run`"),
    ("dead", "eval: the run was interrupted before it finished"),  # running, but its process is gone
])
def test_eval_refuses_runs_that_are_not_finished(cmp, status, fragment):
    folder, _ = cmp
    run_dir = folder / "runs" / "dpo"
    path = run_dir / "manifest.json"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        manifest = json.loads(path.read_text())
        manifest.update(status="running" if status in ("running", "dead") else status,
                        error="RuntimeError: boom",
                        pid=writer.pid if status == "running" else 2 ** 22 + 11)
        path.write_text(json.dumps(manifest))
        before = sha256s(folder)
        assert_one_line_error(cli("eval", run_dir), f"{run_dir}: {fragment.format(pid=writer.pid)}")
        assert sha256s(folder) == before
    finally:
        writer.kill()
        writer.wait()


# -------------------------------------------------------------------------------------------------
# checkpoints: the newest intact one is used; a damaged one is skipped, never loaded half

DPO = [*FAST[:4], "dpo.batch_size=8", "dpo.max_steps=6", "dpo.checkpoint_every=2"]


@pytest.mark.parametrize("how", ["delete state.safetensors", "delete state.json",
                                 "flip a byte in state.json"])
def test_resume_skips_a_damaged_checkpoint_and_uses_the_previous_one(tmp_path, tiny_overrides, monkeypatch,
                                                                     how):
    overrides = [*tiny_overrides, *DPO]
    recipe = lambda: load_recipe(RECIPES / "dpo_imdb.yaml", overrides)  # noqa: E731
    run_recipe(recipe(), tmp_path / "straight")
    save = Checkpointer.save

    def dying_save(self, step, state, extra=None):
        path = save(self, step, state, extra)
        if step == 4:
            raise RuntimeError("simulated crash")
        return path

    monkeypatch.setattr(Checkpointer, "save", dying_save)
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe(), out)
    monkeypatch.setattr(Checkpointer, "save", save)
    newest = out / "checkpoints" / "step-4"
    action, name = how.rsplit(" ", 1)
    if action == "delete":
        (newest / name).unlink()
    else:
        data = bytearray((newest / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (newest / name).write_bytes(bytes(data))
    result = cli("run", RECIPES / "dpo_imdb.yaml", "--out", out, *[a for o in overrides for a in ("--set",
                                                                                                  o)])
    assert result.exit_code == 0, result.output
    problem = f"{name} is missing" if action == "delete" else f"{name} fails its checksum"
    assert f"alignkit: warning: checkpoint {newest}: {problem}; skipped, never loaded half" in result.output
    assert "from its checkpoint at step 2" in result.output
    assert summary(out) == summary(tmp_path / "straight")
    a, b = weights(out), weights(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------------------
# names and disks


@pytest.mark.parametrize("name, fragment", [
    ("x" * 300, "is too long for a folder name (at most 100 characters)"),
    ("x" * 20000, "name: a value of 20000 characters (at most 4096)"),
    ("tab\there", "is not a plain folder name"),
])
def test_a_run_name_is_checked_at_load(tmp_path, tiny_overrides, monkeypatch, name, fragment):
    monkeypatch.chdir(tmp_path)
    for out in ((), ("--out", tmp_path / "run")):
        result = cli("run", RECIPES / "dpo_imdb.yaml", *out, *sets(tiny_overrides, f"name={name}",
                                                                   method="dpo"))
        assert_one_line_error(result, fragment)
        assert len(result.output) < 1000  # the name is shown cut short, never whole
    assert list(tmp_path.iterdir()) == []


def no_space_for(target: str):
    """A writer that fails like a full disk for files named ``target``."""
    real = runlog._fill

    def fill(handle, text, path):
        if Path(path).name == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, text, path)
    return fill


def test_a_full_disk_is_one_line_and_keeps_the_finished_run(cmp, monkeypatch):
    folder, overrides = cmp
    run_dir = folder / "runs" / "dpo"
    before = sha256s(folder)
    monkeypatch.setattr(runlog, "_fill", no_space_for("summary.json"))
    result = cli("run", RECIPES / "dpo_imdb.yaml", "--out", run_dir, "--overwrite", *sets(overrides,
                                                                                          "name=dpo",
                                                                                         method="dpo"))
    assert_one_line_error(result,
                          f"{run_dir / 'eval' / 'summary.json'}: could not be written (No space left on "
                          "device); what was there before is kept")
    assert sha256s(folder) == before
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["dpo", "sft"]  # no temporary siblings left


def test_a_full_disk_in_a_new_run_names_the_file_and_records_the_failure(tmp_path, tiny_overrides,
                                                                         monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(runlog, "_fill", no_space_for("summary.json"))
    result = cli("run", RECIPES / "dpo_imdb.yaml", "--out", out, *sets(tiny_overrides, method="dpo"))
    assert_one_line_error(result,
                          f"{out / 'eval' / 'summary.json'}: could not be written (No space left on device)")
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not list((out / "eval").glob(".summary.json.*"))  # no half-written temporary left behind
