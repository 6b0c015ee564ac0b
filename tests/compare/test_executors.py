"""A comparison's entries in worker processes (``--jobs 2``) and as Ray tasks give the same comparison.csv as
the sequential path (all but the measured wall-time and memory columns); a worker killed mid-entry is
retried, reported by name when it dies again while the others finish, and resumes from its checkpoint on the
next run to the same table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from alignkit.cli import main
from alignkit.compare.executors import local_slots
from alignkit.compare.ray_entry import UNSEEN, run_entry
from alignkit.errors import AlignkitError

ENTRIES = ["dpo", "ipo=dpo:loss=ipo", "ppo", "sft"]
FAST = ["eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=12", "dpo.max_steps=4",
        "dpo.batch_size=8",
        "dpo.checkpoint_every=2", "sft.max_steps=2", "ppo.steps=2", "ppo.rollout_size=8",
        "ppo.minibatch_size=8",
        "ppo.max_new_tokens=8", "ppo.prompt_pool=32", "reward_model.max_steps=4"]
# wall time and memory: the only columns that may differ
MEASURED = ["train_wall_s", "eval_wall_s", "compute_wall_s", "peak_rss_mb"]
HOOKS = Path(__file__).parents[1] / "worker_hooks.py"


def compare(out: Path, overrides: list[str], *extra: str):
    args = ["compare", *ENTRIES, "--out", str(out), *extra]
    args += [a for o in [*overrides, *FAST] for a in ("--set", o)]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "comparison.csv").drop(columns=MEASURED)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, compare_overrides, cache_dir):
    """The baseline, run once in this process; it also puts every shared stage in the session's cache."""
    import os

    os.environ["ALIGNKIT_CACHE"] = str(cache_dir)
    out = tmp_path_factory.mktemp("sequential") / "cmp"
    result = compare(out, compare_overrides)
    assert result.exit_code == 0, result.output
    timings = json.loads((out / "shared" / "timings.json").read_text())["timings_s"]
    assert {"load SFT policy", "gold reward", "train pairs", "reward model",
            "reference logps"} <= set(timings)
    return out


def test_ray_gives_the_sequential_table(sequential, compare_overrides, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "cmp"
        result = compare(out, compare_overrides, "--executor", "ray")
        assert result.exit_code == 0, result.output
        pd.testing.assert_frame_equal(table(out), table(sequential))
    finally:
        ray.shutdown()


def test_jobs_2_gives_the_sequential_table_after_a_killed_worker_resumes(sequential, compare_overrides,
                                                                         tmp_path,
                                                                         monkeypatch):
    """Entries in two worker processes; dpo's worker dies after its step-2 checkpoint, and again on its retry:
    it is named while the others finish, and the next run resumes it to the sequential table."""
    out = tmp_path / "cmp"
    monkeypatch.setenv("ALIGNKIT_TEST_KILL", "dpo:2")
    result = compare(out, compare_overrides, "--jobs", "2", "--plugins", str(HOOKS))
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert (
        error.startswith("alignkit: error: compare: 1 entry failed: dpo (")
        and "rerun the same command" in error
    )
    assert "dpo failed (" in result.output and "retrying it once" in result.output
    assert "sft" in result.output.split("alignkit: error:")[0]  # the others' table is on screen
    index = json.loads((out / "compare.json").read_text())
    assert [e["label"] for e in index["entries"]] == ["ipo", "ppo", "sft"]  # the others finished
    assert index["failed"][0]["label"] == "dpo" and "**dpo**" in (out / "report.md").read_text()
    manifest = json.loads((out / "runs" / "dpo" / "manifest.json").read_text())
    assert manifest["status"] == "running" and [r["from_step"] for r in manifest["resumed"]] == [2]
    pids = {json.loads((out / "runs" / label / "manifest.json").read_text())["pid"] for label in ("ipo",
                                                                                                  "ppo",
                                                                                                  "sft")}
    assert len(pids) == 3  # each entry in a process of its own
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["dpo.log", "ipo.log", "ppo.log", "sft.log"]
    monkeypatch.delenv("ALIGNKIT_TEST_KILL")
    result = compare(out, compare_overrides, "--jobs", "2")
    assert result.exit_code == 0, result.output
    states = {e["label"]: e["state"] for e in json.loads((out / "compare.json").read_text())["entries"]}
    assert states == {"dpo": "resume", "ipo": "current", "ppo": "current", "sft": "current"}
    manifest = json.loads((out / "runs" / "dpo" / "manifest.json").read_text())
    assert manifest["status"] == "done" and [r["from_step"] for r in manifest["resumed"]] == [2, 4]
    pd.testing.assert_frame_equal(table(out), table(sequential))
    assert (out / "winrates.csv").read_text() == (sequential / "winrates.csv").read_text()


@pytest.mark.parametrize("args, fragment", [
    (["--executor", "ray"], "--executor ray: the ray package is not installed; pip install 'alignkit[ray]'"),
    (["--jobs", "2", "--gpus-per-entry", "1"],
     "--jobs 2 with --gpus-per-entry 1 needs 2 GPU(s); 0 visible (none); lower --jobs, "
                                              "or --gpus-per-entry 0 for CPU"),
    (["--ray-address", "auto"], "--ray-address is for --executor ray"),
])
def test_what_phase_2_cannot_start_is_one_line_before_anything_is_written(args, fragment, tmp_path,
                                                                          monkeypatch,
                                                                          tiny_overrides):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU
    result = CliRunner().invoke(main, ["compare", "dpo", "--out", str(tmp_path / "cmp"), *args,
                                       *[a for o in tiny_overrides for a in ("--set", o)]],
                                       catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"alignkit: error: {fragment}"
    assert not (tmp_path / "cmp").exists()


def test_a_node_that_cannot_see_the_shared_folders_is_refused(tmp_path):
    # what a node sees of a folder not shared with it
    (tmp_path / "marker").write_text("another driver's token")
    status, reason = run_entry(str(tmp_path / "spec.json"), [(str(tmp_path / "marker"), "token")], {},
                               str(tmp_path / "log"))
    assert status == UNSEEN and f"cannot see {tmp_path} as the driver wrote it" in reason
    assert not (tmp_path / "log").exists()  # refused before any worker started


def test_gpus_per_entry_beyond_the_visible_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in local_slots(3, None, 6)] == ["0", "1", "2"]
    assert [(env["ALIGNKIT_THREADS"], k) for env, k in local_slots(1, 2, 6)] == [("6", 2)]
    with pytest.raises(AlignkitError, match="--jobs 2 with --gpus-per-entry 2 needs 4 GPU"):
        local_slots(2, 2, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    # every worker gets the entry's whole thread count, not a share: its numbers do not depend on --jobs
    assert local_slots(2, None, 5) == [({"ALIGNKIT_THREADS": "5", "CUDA_VISIBLE_DEVICES": ""}, 0)] * 2


def test_an_entry_runs_with_the_commands_thread_count_whatever_the_executor(compare_overrides, tmp_path):
    """--threads 2: sequential and --jobs 2 both train and evaluate each entry with 2 threads (a worker used
    to get a share, 1: PPO's numbers moved), record it, and agree to 1e-3; a run made with another thread
    count is not reused."""
    def run(out: Path, *extra: str):
        args = ["compare", "ppo", "dpo", "--out", str(out), *extra]
        return CliRunner().invoke(main, args + [a for o in [*compare_overrides, *FAST] for a in ("--set", o)],
                                  catch_exceptions=False)

    try:
        assert run(tmp_path / "seq", "--threads", "2").exit_code == 0
        result = run(tmp_path / "jobs", "--threads", "2", "--jobs", "2")
        assert result.exit_code == 0, result.output
        refused = run(tmp_path / "jobs", "--threads", "1")
    finally:
        torch.set_num_threads(1)
    for out in ("seq", "jobs"):
        for label in ("ppo", "dpo"):
            assert json.loads((tmp_path / out / "runs" / label / "manifest.json").read_text())["threads"] == 2
    pd.testing.assert_frame_equal(table(tmp_path / "jobs"), table(tmp_path / "seq"), check_exact=False,
                                  atol=1e-3)
    assert refused.exit_code == 1 and "threads: 2 -> 1" in refused.output.strip().splitlines()[-1]
