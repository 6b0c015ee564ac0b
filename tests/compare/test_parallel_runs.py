"""Parallel comparisons (``--jobs N``) against each other and against ``kill -9``: a second compare into a
folder still being run is refused in one line before it plans anything; the workers of a killed compare exit
rather than run on as orphans, and the folder is free again; a failed worker is reported by its error line,
never by progress-bar text; and an error line is never glued to a progress bar."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tqdm import tqdm

from alignkit.cli import main
from alignkit.compare import executors
from alignkit.compare.ray_entry import last_error
from alignkit.compare.writer import WRITER_FILE, ComparisonWriter
from alignkit.errors import AlignkitError
from alignkit.runfolder import _pid_alive

ROOT = Path(__file__).parents[2]
ENDLESS = ["sft", "sft2=sft:lr=0.0001"]  # two entries that train until they are killed


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def workers_of(pid: int) -> list[int]:
    """The live worker processes whose parent is ``pid``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid \
                and b"alignkit.compare.worker" in cmdline:
            found.append(int(proc.name))
    return found


def wait_for(condition, timeout: float, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(every)
    return condition()


def screen(output: str) -> list[str]:
    """What a terminal shows of ``output``: a carriage return goes back to the line's start and the text after
    it overwrites what was there."""
    shown = []
    for line in output.split("\n"):
        cells = ""
        for part in line.split("\r"):
            cells = part + cells[len(part):]
        shown.append(cells.rstrip())
    return shown


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker processes from /proc")
def test_a_second_compare_is_refused_and_a_killed_compare_leaves_no_workers(tmp_path, tiny_overrides):
    out = tmp_path / "cmp"
    args = ["compare", *ENDLESS, "--out", str(out), "--jobs", "2",
            *sets([*tiny_overrides, "sft.max_steps=1000000", "sft.checkpoint_every=0", "eval.every_steps=0",
                                  "eval.temperatures=[]"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALIGNKIT_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "alignkit", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        workers = wait_for(lambda: workers_of(first.pid) if len(workers_of(first.pid)) == 2 else [], 600)
        assert len(workers) == 2, first.stderr.read().decode()[-2000:] if first.poll() is not None else None
        before = sorted(p.name for p in (out / "logs").iterdir())

        second = CliRunner().invoke(main, args, catch_exceptions=False)
        assert second.exit_code == 1 and "Traceback" not in second.output
        assert second.output.strip().splitlines() == [
            f"alignkit: error: {out}: a comparison is still being run there (pid {first.pid} on "
            f"{socket.gethostname()}); wait for it to finish or stop it, or choose another --out"]
        assert workers_of(os.getpid()) == [] and sorted(p.name for p in (out / "logs").iterdir()) == before
        assert json.loads((out / WRITER_FILE).read_text())["pid"] == first.pid

        first.send_signal(signal.SIGKILL)
        first.wait()
        assert wait_for(lambda: not any(_pid_alive(w) for w in workers), 20), "workers outlived their compare"
        ComparisonWriter(out).check()  # the dead compare's claim is stale: the folder is free again
    finally:
        for pid in [first.pid, *workers]:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        first.wait()


def test_a_finished_compare_releases_its_folder_and_a_dead_ones_claim_is_taken_over(tmp_path):
    writer = ComparisonWriter(tmp_path)
    writer.claim()
    assert json.loads((tmp_path / WRITER_FILE).read_text())["pid"] == os.getpid()
    writer.release()
    assert not (tmp_path / WRITER_FILE).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim = {"status": "running", "pid": dead.pid, "host": socket.gethostname(), "heartbeat_at": time.time()}
    (tmp_path / WRITER_FILE).write_text(json.dumps(claim))
    writer.claim()  # a writer that died is no writer
    assert json.loads((tmp_path / WRITER_FILE).read_text())["pid"] == os.getpid()
    writer.release()


def test_a_live_claim_on_another_host_is_refused_until_its_heartbeat_is_stale(tmp_path):
    beat = {"status": "running", "pid": 1, "host": "node-7", "heartbeat_at": time.time()}
    (tmp_path / WRITER_FILE).write_text(json.dumps(beat))
    with pytest.raises(AlignkitError, match=r"a comparison is still being run there \(pid 1 on node-7\)"):
        ComparisonWriter(tmp_path).claim()
    assert json.loads((tmp_path / WRITER_FILE).read_text()) == beat  # refused: untouched
    (tmp_path / WRITER_FILE).write_text(json.dumps({**beat, "heartbeat_at": time.time() - 7200}))
    ComparisonWriter(tmp_path).check()


def progress_log(path: Path, then: str) -> Path:
    """A worker's log as tqdm writes it (redraws after carriage returns, no line break at the end), then
    ``then`` written straight after the bar."""
    with open(path, "w") as handle:
        bar = tqdm(total=4, desc="train dpo", file=handle, mininterval=0, ascii=True)
        for _ in range(2):
            bar.update(1)
        handle.write(then)
        handle.flush()
    return path


@pytest.mark.parametrize("then, code, reason", [
    ("alignkit: error: runs/dpo: a run is still being written there (pid 9 on h)\n", 2,
     "runs/dpo: a run is still being written there (pid 9 on h)"),
    ("", 9, "exit status 9, no error line; its output: {log}"),
    ("", -9, "killed by signal 9, no error line; its output: {log}"),
    ("\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
     "torch.OutOfMemoryError: CUDA out of memory\n", 1, "torch.OutOfMemoryError: CUDA out of memory"),
])
def test_a_failed_workers_reason_is_its_error_line_never_progress_bar_text(tmp_path, then, code, reason):
    log = progress_log(tmp_path / "dpo.log", then)
    found = last_error(str(log), code)
    assert found == reason.format(log=log)
    assert "%|" not in found and "train dpo" not in found


def test_an_error_line_is_never_glued_to_the_comparisons_progress_bar(tmp_path, tiny_overrides, monkeypatch):
    def fails(spec, recipe=None, runtime=None):
        raise AlignkitError(f"{spec['label']}: the judge stopped answering")

    monkeypatch.setattr(executors, "run_job", fails)
    args = ["compare", "sft", "--out", str(tmp_path / "cmp"), *sets(tiny_overrides)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "alignkit: error: sft: the judge stopped answering" in screen(result.output)
    assert not (tmp_path / "cmp" / WRITER_FILE).exists()  # released on the way out
