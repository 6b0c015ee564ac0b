"""What one Ray task of ``alignkit compare --executor ray`` runs on its node: check that the node sees the
comparison folder and the cache (the driver's marker files, read back), then start the entry's worker process
(``python -m alignkit.compare.worker SPEC.json``) with the GPUs Ray gave the task. Standard library only, so a
Ray worker imports nothing heavy to run it. A worker never outlives the process that started it
(:func:`exit_with_parent`); why a worker failed is read from its log (:func:`last_error`)."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

UNSEEN = 3  # the status of a task whose node cannot see a shared folder: the comparison stops


def run_entry(spec_path: str, markers: list[tuple[str, str]], env: dict[str, str], log_path: str,
              gpus: int = 0, port: int = 29500) -> tuple[int, str]:
    """``(exit status, reason)`` of one entry run on this node; ``markers``: (file, token) pairs the driver
    wrote, which this node must read back, one per shared folder."""
    for path, token in markers:
        try:
            seen = Path(path).read_text().strip() == token
        except OSError:
            seen = False
        if not seen:
            folder = Path(path).parent
            return UNSEEN, (f"Ray node {socket.gethostname()} cannot see {folder} as the driver wrote it; "
                            "the comparison folder (--out) and the cache (ALIGNKIT_CACHE) must be on a "
                            "filesystem every node mounts at the same path (NFS, Lustre, a shared volume)")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        done = subprocess.run([*worker_command(gpus, port), spec_path], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **env}, cwd=env.get("ALIGNKIT_JOB_CWD") or None,
                              preexec_fn=exit_with_parent())
    return done.returncode, last_error(log_path, done.returncode)


ERROR_LINE = "alignkit: error: "
PROGRESS = re.compile(r"\d+%\||\| *\d+/\d+ \[|\d+/\d+ \[\d")  # a progress bar: tqdm's "50%|", "| 2/4 ["
# a traceback's last line: ``module.SomeError: why``
RAISED = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt)\b(?::|$)")


def last_error(log_path: str, returncode: int) -> str:
    """Why a worker failed, from its log: its last ``alignkit: error:`` line (found also where a progress bar
    left no line break before it), else its last exception line, else how it ended (a signal, an exit status);
    never a progress bar's text. A bar's redraws (carriage returns) count as lines of their own."""
    if returncode == 0:
        return ""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE in line:
            return line.rsplit(ERROR_LINE, 1)[1][:300]
    raised = [line for line in lines if RAISED.match(line) and not PROGRESS.search(line)]
    if raised:
        return raised[-1][:300]
    ended = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return f"{ended}, no error line; its output: {log_path}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent():
    """A ``preexec_fn`` for a worker: on Linux the kernel sends it SIGTERM when the process that started it
    dies, ``kill -9`` included (``prctl(PR_SET_PDEATHSIG)``; ``accelerate launch`` passes SIGTERM on to its
    ranks); a worker whose parent is already gone exits at once. Elsewhere the worker's own watchdog
    (:func:`alignkit.compare.worker.main`) notices the parent gone within a second."""
    parent = os.getpid()
    try:  # resolved here, before the fork: the child only calls it
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def arm() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def worker_command(gpus: int, port: int) -> list[str]:
    """The worker's command line: one process, or ``accelerate launch`` over ``gpus`` GPUs."""
    if gpus > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
                "--main_process_port", str(port), "-m", "alignkit.compare.worker"]
    return [sys.executable, "-m", "alignkit.compare.worker"]
