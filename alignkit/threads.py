"""How many CPU threads torch uses, decided once per command before torch starts: ``--threads`` beats
``$ALIGNKIT_THREADS``, which beats the cores this process may run on (its CPU affinity, not the machine's
total). Idle OpenMP threads sleep instead of spinning, so two runs sharing the cores do not thrash."""

from __future__ import annotations

import os
import sys

from alignkit.errors import AlignkitError

ENV_VAR = "ALIGNKIT_THREADS"

# OpenMP's default is to spin for a while after each parallel region; with two busy processes on the same
# cores the spinning thread holds the core its partner needs, and every tiny op waits out a scheduler slice
_OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), else every core the OS sees."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def parse_threads(value: str | int, source: str) -> int:
    """``value`` as a thread count (a whole number >= 1); ``source`` names the option or variable in the error."""
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise AlignkitError(f"{source} {value!r}: expected a whole number of threads, 1 or more")
    return count


def thread_count(requested: str | int | None = None) -> int:
    """The thread count to use: ``requested`` (from ``--threads``), else ``$ALIGNKIT_THREADS`` when set and not
    empty, else the available cores."""
    if requested is not None:
        return parse_threads(requested, "--threads")
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return parse_threads(from_env, ENV_VAR)
    return available_cores()


def configure_threads(requested: str | int | None = None) -> int:
    """Decide the thread count and give it to torch (intra-op and inter-op); returns it. Call it before torch
    is imported, else the OpenMP wait policy set here comes too late (the thread counts still apply)."""
    count = thread_count(requested)
    if "torch" not in sys.modules:
        for name, value in _OPENMP_ENV.items():
            os.environ.setdefault(name, value)  # a user's own setting wins
    import torch

    torch.set_num_threads(count)
    _set_interop_threads(torch, count)
    return count


def _set_interop_threads(torch, count: int) -> None:
    """Inter-op threads can be set once per process, before any inter-op work; after that (a second command
    in one process, as in tests) torch refuses, and the pool it already has stays."""
    if torch.get_num_interop_threads() == count:
        return
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:
        pass
