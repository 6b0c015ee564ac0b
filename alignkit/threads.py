"""How many CPU threads torch uses, decided once per command before torch starts: ``--threads`` beats
``$ALIGNKIT_THREADS``, which beats the cores this process may run on (its CPU affinity, not the machine's
total). Idle OpenMP threads spin only briefly before they sleep, so two runs sharing the cores do
not thrash."""

from __future__ import annotations

import os
import sys

from alignkit.errors import AlignkitError

ENV_VAR = "ALIGNKIT_THREADS"

# After each parallel region an idle OpenMP thread spins before it sleeps (libgomp, which torch's Linux wheels
# use: 300,000 spins). With two busy processes on the same cores the spinning thread holds the core its
# partner needs. Measured on 2 cores, a 40-step DPO run, solo / two at once: default spinning 19.2 s / 47.5 s
# (2.47x); OMP_WAIT_POLICY=PASSIVE (no spinning) 24.4 s / 37.3 s; 10,000 spins 20.8 s / 41.7 s (2.0x): most of
# the solo speed and most of the sharing. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
_SPIN_ENV, _USER_WAIT_ENV = {"GOMP_SPINCOUNT": "10000"}, ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), else every core the OS sees."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def launched_rank() -> int:
    """This process's rank under ``accelerate launch``/``torchrun`` (0 when not launched), read from the
    launcher's environment without starting torch.distributed."""
    return int(os.environ.get("RANK", "0") or 0)


def launched_world() -> int:
    """How many processes the launcher started in all (1 when not launched), from its environment."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def local_processes() -> int:
    """How many processes the launcher started on this machine (they share its cores)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def parse_threads(value: str | int, source: str) -> int:
    """``value`` as a thread count (a whole number >= 1); ``source`` names the option or variable in
    the error."""
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise AlignkitError(f"{source} {value!r}: expected a whole number of threads, 1 or more")
    return count


def thread_count(requested: str | int | None = None) -> int:
    """The thread count to use: ``requested`` (from ``--threads``), else ``$ALIGNKIT_THREADS`` when set and
    not
    empty, else the available cores, shared evenly by the processes a launcher started on this machine."""
    if requested is not None:
        return parse_threads(requested, "--threads")
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return parse_threads(from_env, ENV_VAR)
    return max(1, available_cores() // local_processes())


def configure_threads(requested: str | int | None = None) -> int:
    """Decide the thread count and give it to torch (intra-op and inter-op); returns it. Call it before torch
    is imported, else the OpenMP spin count set here comes too late (the thread counts still apply)."""
    count = thread_count(requested)
    if "torch" not in sys.modules and not any(os.environ.get(name) for name in _USER_WAIT_ENV):
        os.environ.update(_SPIN_ENV)
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
