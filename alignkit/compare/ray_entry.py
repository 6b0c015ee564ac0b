"""What one Ray task of ``alignkit compare --executor ray`` runs on its node: check that the node sees the
comparison folder and the cache (the driver's marker files, read back), then start the entry's worker process
(``python -m alignkit.compare.worker SPEC.json``) with the GPUs Ray gave the task. Standard library only, so a Ray
worker imports nothing heavy to run it."""

from __future__ import annotations

import os
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
            return UNSEEN, (f"Ray node {socket.gethostname()} cannot see {folder} as the driver wrote it; the "
                            "comparison folder (--out) and the cache (ALIGNKIT_CACHE) must be on a filesystem every "
                            "node mounts at the same path (NFS, Lustre, a shared volume)")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        done = subprocess.run([*worker_command(gpus, port), spec_path], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **env}, cwd=env.get("ALIGNKIT_JOB_CWD") or None)
    return done.returncode, last_error(log_path, done.returncode)


def last_error(log_path: str, returncode: int) -> str:
    """Why a worker failed, from its log: its ``alignkit: error:`` line, else its last line, else its status."""
    if returncode == 0:
        return ""
    try:
        lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line.removeprefix("alignkit: error: ") for line in lines if line.startswith("alignkit: error: ")]
    if errors:
        return errors[-1]
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1][:300] if lines else f"exit status {returncode}"


def worker_command(gpus: int, port: int) -> list[str]:
    """The worker's command line: one process, or ``accelerate launch`` over ``gpus`` GPUs."""
    if gpus > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
                "--main_process_port", str(port), "-m", "alignkit.compare.worker"]
    return [sys.executable, "-m", "alignkit.compare.worker"]
