"""Crash-safe training state, shared by every training loop (``fit`` and PPO).

A :class:`Checkpointer` writes ``RUN/checkpoints/step-N/`` every ``checkpoint_every`` optimiser steps (PPO:
iterations) and restores the newest complete one on resume, so a killed run continues exactly where it
stopped. Format, no pickle anywhere: ``state.safetensors`` holds every tensor (trainable parameters,
optimiser moments, the torch RNG), ``state.json`` the rest as a skeleton pointing at those tensors (scheduler,
python/numpy RNG states, the data position = step, budget counters, the metrics-log offset, loop extras),
``CHECKSUMS.json`` the sha256 of both, and ``COMPLETE`` is written last; a checkpoint is built under a
temporary name and renamed into place. Resume uses the newest checkpoint that verifies: one missing a file or
failing its checksum is skipped with a warning, never loaded half.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from alignkit.errors import AlignkitError, warn
from alignkit.runlog import write_error, write_json

COMPLETE, TENSORS, SKELETON, CHECKSUMS = "COMPLETE", "state.safetensors", "state.json", "CHECKSUMS.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_problem(folder: Path) -> str | None:
    """Why a complete checkpoint cannot be loaded (a file missing, unreadable or failing its checksum), or
    None when it verifies. Checkpoints written before checksums existed are checked for their files only."""
    for name in (TENSORS, SKELETON):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        recorded = json.loads((folder / CHECKSUMS).read_text()) if (folder / CHECKSUMS).is_file() else {}
        for name, sha in recorded.items():
            if _sha256(folder / name) != sha:
                return f"{name} fails its checksum"
        skeleton = json.loads((folder / SKELETON).read_text())
        int(skeleton["meta"]["step"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable ({type(exc).__name__})"
    return None


class NumericalError(AlignkitError):
    """A non-finite loss, gradient norm or weight: reported as one line naming stage, step and
    last checkpoint."""


# --------------------------------------------------------------------------------------------------
# nested state <-> (JSON skeleton, flat tensor dict): optimiser state dicts without pickle

def flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` whose tensors are moved into ``tensors`` (exact: tuples, int keys and
    non-finite floats are tagged so :func:`unflatten` rebuilds the same object)."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[flatten(k, tensors), flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__items__" in obj:
        return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
    if "__float__" in obj:
        return float(obj["__float__"])
    return {k: unflatten(v, tensors) for k, v in obj.items()}


# --------------------------------------------------------------------------------------------------
# what a loop owns

def rng_states(generators: Sequence[random.Random] = ()) -> dict:
    """Every random stream training draws from: torch (CPU, CUDA), numpy, python, and the loop's own."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "own": [g.getstate() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict, generators: Sequence[random.Random] = ()) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for generator, own in zip(generators, state["own"]):
        generator.setstate(own)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainState:
    """The mutable state of one training loop: trainable parameters, optimisers, schedulers, the loop's own
    random generators and its budget. The step (data position) and loop extras travel alongside."""

    def __init__(self, params: Sequence[torch.nn.Parameter], optimizers: Sequence, schedulers: Sequence, *,
                 budget=None, rngs: Sequence[random.Random] = ()):
        self.params, self.optimizers, self.schedulers = list(params), list(optimizers), list(schedulers)
        self.budget, self.rngs = budget, list(rngs)

    def snapshot(self) -> dict:
        return {"params": [p.detach() for p in self.params],
                "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers],
                "rng": rng_states(self.rngs), "budget": dict(vars(self.budget)) if self.budget else None}

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            for param, saved in zip(self.params, state["params"], strict=True):
                param.copy_(saved)
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        if self.budget is not None and state["budget"]:
            for key, value in state["budget"].items():
                setattr(self.budget, key, value)
        set_rng_states(state["rng"], self.rngs)

    def nonfinite_weights(self) -> bool:
        return any(not bool(torch.isfinite(p).all()) for p in self.params)


def nonfinite_modules(*modules: torch.nn.Module) -> bool:
    """True when any parameter of ``modules`` holds a NaN or inf (such weights are never saved)."""
    return any(not bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


# --------------------------------------------------------------------------------------------------
# checkpoints on disk

class Checkpointer:
    """``RUN/checkpoints/``: saves a loop's :class:`TrainState` every N steps (atomically, keeping the newest
    ``keep``), restores the newest complete one, and beats ``heartbeat()`` so a dead run is recognisable.
    The first loop that claims it (:meth:`claim`, through the run's context) owns it."""

    def __init__(self, folder: Path, *, keep: int = 2, log=None, heartbeat: Callable[[], None] | None = None,
                 heartbeat_every_s: float = 30.0, read_only: bool = False):
        """``read_only``: restore from ``folder`` but never write it (another process owns it)."""
        self.folder, self.keep, self.log, self.read_only = Path(folder), keep, log, read_only
        self.heartbeat, self.heartbeat_every_s = heartbeat, heartbeat_every_s
        self.stage: str | None = None
        self.restored_step = 0
        self._last_beat = time.monotonic()
        self._skipped: set[Path] = set()

    def claim(self, stage: str) -> bool:
        if self.stage is None:
            self.stage = stage
        return self.stage == stage

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("step-*") if (p / COMPLETE).is_file() and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def intact(self) -> Path | None:
        """The newest complete checkpoint that verifies; each one skipped is named once, with why."""
        found = self.complete()
        for folder in reversed(found):
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            if folder not in self._skipped:
                self._skipped.add(folder)
                warn(f"checkpoint {folder}: {problem}; skipped, never loaded half (resuming from the "
                     "previous intact checkpoint, or restarting the stage if there is none)")
        return None

    @property
    def skipped(self) -> int:
        """How many damaged checkpoints :meth:`intact` passed over."""
        return len(self._skipped)

    def latest_meta(self) -> dict | None:
        """The newest intact checkpoint's JSON (step, stage, log offset) without loading its tensors."""
        found = self.intact()
        return json.loads((found / SKELETON).read_text())["meta"] if found else None

    def last_good(self) -> str:
        found = self.complete()
        return str(found[-1]) if found else "none"

    def save(self, step: int, state: TrainState, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        if state.nonfinite_weights():
            raise self.fault(step, "weights are not finite (not checkpointed)")
        tensors: dict[str, torch.Tensor] = {}
        meta = {"stage": self.stage, "step": step, "log_offset": self.log.position() if self.log else 0,
                "saved_at": time.time()}
        skeleton = {"meta": meta, "state": flatten(state.snapshot(), tensors), "extra": flatten(extra or {},
                                                                                                tensors)}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.", dir=self.folder))
        try:
            save_file(tensors, str(tmp / TENSORS))
            write_json(tmp / SKELETON, skeleton)
            write_json(tmp / CHECKSUMS, {name: _sha256(tmp / name) for name in (TENSORS, SKELETON)})
            (tmp / COMPLETE).write_text(f"{step}\n")
            final = self.folder / f"step-{step}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:  # a full disk: the older checkpoints stay as they were
            raise write_error(exc.filename or tmp, exc) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.beat(force=True)
        return final

    def restore(self, state: TrainState) -> tuple[int, dict]:
        """Load the newest complete checkpoint of the claimed stage into ``state``: ``(step, extra)``, or
        ``(0, {})`` when there is none to resume."""
        from safetensors.torch import load_file

        found = self.intact()
        if found is None:
            return 0, {}
        skeleton = json.loads((found / SKELETON).read_text())
        if skeleton["meta"]["stage"] != self.stage:
            return 0, {}
        tensors = load_file(str(found / TENSORS))
        state.restore(unflatten(skeleton["state"], tensors))
        self.restored_step = skeleton["meta"]["step"]
        return self.restored_step, unflatten(skeleton["extra"], tensors)

    def step_done(self, step: int, every: int, state: TrainState,
                  extra: Callable[[], dict] | None = None) -> None:
        """After optimiser step ``step``: checkpoint when due, else beat the heartbeat now and then."""
        if self.read_only:
            return
        if every and step % every == 0:
            self.save(step, state, extra() if extra else None)
        else:
            self.beat()

    def beat(self, force: bool = False) -> None:
        if self.heartbeat and (force or time.monotonic() - self._last_beat >= self.heartbeat_every_s):
            self._last_beat = time.monotonic()
            self.heartbeat()

    def fault(self, step: int, what: str) -> NumericalError:
        return numerical_error(self.stage or "train", step, what, self.last_good())

    keep_final = False  # a loop that keeps its last state for an extension (--until-converged) sets it

    def clear(self) -> None:
        """A finished run needs no training state: free the disk (unless its loop keeps the final state)."""
        if not self.read_only and not self.keep_final:
            shutil.rmtree(self.folder, ignore_errors=True)


def numerical_error(stage: str, step: int, what: str, last_good: str = "none") -> NumericalError:
    hint = (
        f"last good checkpoint: {last_good} (rerun the same command to resume from it)"
        if last_good != "none"
        else "no checkpoint yet"
    )
    return NumericalError(f"{stage}: step {step}: {what}; {hint}; or use a lower lr or skip_nonfinite: true")
