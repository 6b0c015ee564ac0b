"""CPU threads: --threads beats $ALIGNKIT_THREADS beats the process's CPU affinity; bad values are one
error line; torch really gets the count (checked in fresh processes, where inter-op threads can still
be set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import cpu_runtime

import alignkit.cli
from alignkit.errors import AlignkitError
from alignkit.threads import ENV_VAR, available_cores, thread_count

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "dpo_imdb.yaml"


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_option_beats_env_beats_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert thread_count() == 3
    monkeypatch.setenv(ENV_VAR, "5")
    assert thread_count() == 5
    assert thread_count("2") == 2 and thread_count(4) == 4
    monkeypatch.setenv(ENV_VAR, " ")  # set but empty: as if unset
    assert thread_count() == 3


def test_default_is_affinity_not_machine_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cores() == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert available_cores() == 64


@pytest.mark.parametrize("option, env, fragment", [
    ("abc", None, "--threads 'abc': expected a whole number of threads, 1 or more"),
    ("0", None, "--threads '0'"),
    ("1.5", "2", "--threads '1.5'"),
    (None, "-1", f"{ENV_VAR} '-1': expected a whole number of threads, 1 or more"),
    (None, "two", f"{ENV_VAR} 'two'"),
])
@pytest.mark.parametrize("command", [["run", "missing.yaml"], ["compare", "dpo"], ["eval", "no_run"]])
def test_bad_thread_counts_are_one_error_line(tmp_path, command, option, env, fragment):
    args = [*command, *(["--threads", option] if option is not None else [])]
    result = CliRunner().invoke(alignkit.cli.main, args, env={ENV_VAR: env} if env else None)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"alignkit: error: {fragment}"), result.output


@pytest.mark.parametrize("command", [["run", "r.yaml"], ["compare", "dpo"], ["eval", "some_run"]])
def test_every_training_command_configures_threads_first(monkeypatch, command):
    seen = []

    def record(requested=None):
        seen.append(requested)
        raise AlignkitError("stop here")

    monkeypatch.setattr(alignkit.cli, "configure_threads", record)
    result = CliRunner().invoke(alignkit.cli.main, [*command, "--threads", "3"])
    assert seen == ["3"] and result.output == "alignkit: error: stop here\n"


def _fresh_python(code: str, **env: str) -> dict:
    """Run ``code`` in a new interpreter (nothing imported, no thread settings) and return its JSON output."""
    clean = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                              "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


_REPORT = ("import json, os, torch; print(json.dumps({'count': n, 'intra': torch.get_num_threads(), "
           "'interop': torch.get_num_interop_threads(), 'wait': os.environ.get('OMP_WAIT_POLICY'), 'spin': "
           "os.environ.get('GOMP_SPINCOUNT')}))")


def test_torch_gets_the_count_and_idle_threads_spin_briefly():
    code = "from alignkit.threads import configure_threads; n = configure_threads(); " + _REPORT
    assert _fresh_python(code, **{ENV_VAR: "3"}) == {"count": 3, "intra": 3, "interop": 3, "wait": None,
                                                          "spin": "10000"}


def test_cli_module_does_not_import_torch():
    """OpenMP reads its wait policy when torch loads it: the CLI must get to configure_threads first."""
    assert _fresh_python("import json, sys, alignkit.cli; print(json.dumps('torch' in sys.modules))") is False


def test_second_configure_in_one_process_keeps_interop_pool_and_users_wait_policy():
    code = ("from alignkit.threads import configure_threads; configure_threads(1); "
            "import torch; torch.ones(4).add_(1); n = configure_threads('2'); " + _REPORT)
    assert _fresh_python(code, OMP_WAIT_POLICY="ACTIVE") == {"count": 2, "intra": 2, "interop": 1,
                                                             "wait": "ACTIVE", "spin": None}


def test_manifest_records_the_thread_count(tmp_path):
    import torch

    from alignkit.recipe import load_recipe
    from alignkit.run.pipeline import Run

    run = Run(load_recipe(RECIPE), tmp_path / "run", cpu_runtime(), cache_dir=tmp_path / "cache")
    assert run.manifest["threads"] == torch.get_num_threads()
