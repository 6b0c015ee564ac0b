"""Run directories: alignkit never touches a folder it did not create, ``--overwrite`` swaps a whole run in
only on success, a run still being written is left alone, and recipe names cannot escape ``runs/``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from reliability_helpers import PLUGIN, QUICK, RECIPES, nan_loss, snapshot
from test_cli import assert_one_line_error

from alignkit.cli import main
from alignkit.errors import AlignkitError
from alignkit.runfolder import check_run_name

STEPS = [*QUICK, "dpo.max_steps=2"]


def run(tmp_path, tiny_overrides, *args):
    sets = [a for o in [*tiny_overrides, *STEPS] for a in ("--set", o)]
    return CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), *sets, *map(str, args)],
                              catch_exceptions=False)


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_a_foreign_folder_is_refused_and_left_byte_for_byte(tmp_path, tiny_overrides, overwrite):
    mine = tmp_path / "mine"
    for name, text in {"model/weights.bin": "precious", "eval/summary.json": "{}", "metrics.jsonl": "x\n",
                       "notes.txt": "do not touch"}.items():
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(text)
    before = snapshot(mine)
    assert_one_line_error(run(tmp_path, tiny_overrides, "--out", mine, *overwrite),
                          "is not an alignkit run directory")
    assert snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_failed_overwrite_keeps_the_old_run_and_a_good_one_replaces_it(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    assert run(tmp_path, tiny_overrides, "--out", out).exit_code == 0
    before = snapshot(out)
    assert (out / ".alignkit-run").is_file()
    failed = run(tmp_path, tiny_overrides, "--out", out, "--overwrite", "--plugins", PLUGIN, "--set",
                 nan_loss())
    assert_one_line_error(failed, "dpo: step 2: loss is nan")
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    assert run(tmp_path, tiny_overrides, "--out", out, "--overwrite", "--set", "dpo.beta=0.5").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["recipe"]["methods"]["dpo"]["beta"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary siblings left


def test_a_run_still_being_written_is_left_alone(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    assert run(tmp_path, tiny_overrides, "--out", out).exit_code == 0
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running", "pid": writer.pid}))
        before = snapshot(out)
        assert_one_line_error(run(tmp_path, tiny_overrides, "--out", out, "--overwrite"),
                              f"a run is still being written there (pid {writer.pid}")
        assert snapshot(out) == before
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", "a\\b"])
def test_recipe_names_cannot_escape_the_runs_folder(tmp_path, tiny_overrides, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run(tmp_path, tiny_overrides, "--set", f"name={name}"),
                          "is not a plain folder name")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AlignkitError):
        check_run_name(name)
    assert check_run_name("dpo@beta=0.1#seed0") == "dpo@beta=0.1#seed0"
