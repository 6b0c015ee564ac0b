"""Run folders, claimed and read in one place. Claiming: the marker that makes a folder alignkit's, who (if
anyone) is still writing it, and what a new run may do with an existing one (start, resume, replace, or
refuse); alignkit only ever changes folders it created. Reading: ``manifest.json``, ``eval/summary.json``,
``eval/trajectory.jsonl`` and the saved model's checksums, each validated as it is read. Whatever is missing,
empty, truncated, malformed or of a run format this alignkit does not read becomes one :class:`RunFolderError`
line naming the file and what to do (``--overwrite``, rerun, or the alignkit version that wrote it). The run
format and what changed in it, and why older folders still read, are one table: ``alignkit.runformat``.
``run``
(resume), ``compare``, ``eval`` and ``report`` all read run folders through here."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from alignkit import __version__
from alignkit.cache import sha256_file
from alignkit.config import first_difference, to_dict
from alignkit.errors import AlignkitError
from alignkit.eval.summary import GOLD_MEAN, SUMMARY_FILE, EvalSummary
from alignkit.recipe import Recipe, check_run_name
from alignkit.runformat import CARD, FORMATS, RUN_FORMAT
from alignkit.runlog import jsonable

STATUSES = ("running", "done", "failed", "interrupted")
STALE_AFTER_S = 3600.0  # a run on another host whose heartbeat is older than this is taken for dead
OVERWRITE = "rerun with --overwrite to train it again"


class RunFolderError(AlignkitError):
    """A run folder file that is missing, unreadable, malformed or of another format: one line."""


def read_json(path: Path, hint: str = OVERWRITE) -> Any:
    """A JSON file's data, or one line naming the file, what is wrong with it and ``hint``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing; {hint}") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(
            f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); {hint}"
        ) from None
    if not text.strip():
        raise RunFolderError(f"{path}: empty (a write was cut short?); {hint}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RunFolderError(
            f"{path}: not valid JSON (truncated or corrupt at line {exc.lineno}); {hint}"
        ) from None


def _expect(path: Path, data: dict, key: str, kind: type, hint: str, written: str) -> None:
    if not isinstance(data.get(key), kind):
        raise RunFolderError(f"{path}: {key}: missing or not a{'n' if kind is dict else ''} "
                             f"{'object' if kind is dict else kind.__name__}{written}; {hint}")


def check_manifest(path: Path, data: Any, hint: str = OVERWRITE) -> dict:
    """A manifest's data, validated: an object of this run format with a status, a name and a recipe."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: not a run manifest (a JSON {type(data).__name__}, expected an "
                             f"object); {hint}")
    versions = data.get("versions")
    version = versions.get("alignkit") if isinstance(versions, dict) else None
    fmt = data.get("alignkit_run")
    known = [f.number for f in FORMATS]
    if fmt not in known:
        by = f"written by alignkit {str(version)[:40]}" if version else "not written by alignkit (no version)"
        newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > RUN_FORMAT
        reads = f"format {RUN_FORMAT} only" if len(known) == 1 else f"formats {known[0]} to {RUN_FORMAT}"
        raise RunFolderError(
            f"{path}: run format {str(fmt)[:20] if fmt is not None else 'unknown'}, {by}; this alignkit "
            f"({__version__}) reads {reads}: "
            + (f"read it with alignkit {str(version)[:40]}" if newer and version else
               "read it with the alignkit that wrote it") + ", or rerun with --overwrite to train it again")
    for later in FORMATS[known.index(fmt) + 1:]:  # an older format, brought to this one in memory
        data = {**later.upgrade(data), "alignkit_run": later.number}
    written = f" (written by alignkit {str(version)[:40]})" if version and version != __version__ else ""
    for key, kind in (("status", str), ("name", str), ("method", str), ("recipe", dict)):
        _expect(path, data, key, kind, hint, written)
    if data["status"] not in STATUSES:
        raise RunFolderError(f"{path}: status: {data['status'][:40]!r} is not one of {', '.join(STATUSES)}"
                             f"{written}; {hint}")
    for key in ("method", "eval"):
        if key not in data["recipe"]:
            raise RunFolderError(f"{path}: recipe.{key}: missing{written}; {hint}")
    return data


def check_summary(path: Path, data: Any, hint: str) -> dict:
    """An ``eval/summary.json``, validated: an object; a policy's rows a list of objects with
    a temperature."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: not a run summary (a JSON {type(data).__name__}, expected an object); "
                             f"{hint}")
    rows = data.get("by_temperature")
    if rows is not None and not (isinstance(rows, list) and rows
                                 and all(isinstance(r, dict) and "temperature" in r for r in rows)):
        raise RunFolderError(f"{path}: by_temperature: expected a list of rows with a temperature; {hint}")
    if rows is not None and GOLD_MEAN not in data:
        raise RunFolderError(f"{path}: {GOLD_MEAN}: missing; {hint}")
    return data


def read_trajectory(path: Path, hint: str) -> list[dict]:
    """``eval/trajectory.jsonl``: one object with an integer ``step`` a line (no file: no checkpoints)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as exc:
        raise RunFolderError(
            f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); {hint}"
        ) from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise RunFolderError(
                f"{path}: line {number}: not valid JSON (truncated or corrupt); {hint}"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise RunFolderError(f"{path}: line {number}: not a trajectory point (no integer step); {hint}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# the saved model's checksums


def folder_checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but the model card (``README.md``: written
    again
    when a run is re-evaluated, documentation rather than the model)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != CARD}


def model_problem(run_dir: Path, manifest: dict) -> str | None:
    """Why a finished run's saved model cannot be reused (``model/x: missing``), or None when it verifies
    against the checksums its manifest recorded (a run recorded before checksums: its folder must exist)."""
    folder = Path(run_dir) / "model"
    recorded = manifest.get("model_sha256")
    if not isinstance(recorded, dict):
        return None if folder.is_dir() and any(folder.iterdir()) else "model/: missing"
    for rel, sha in sorted(recorded.items()):
        if rel == CARD:  # recorded by runs from before the card (peft writes one of its own)
            continue
        file = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:  # a manifest names files inside model/ only
            return f"model/{rel}: outside the model folder"
        if not file.is_file():
            return f"model/{rel}: missing"
        if sha256_file(file) != sha:
            return f"model/{rel}: fails its checksum"
    return None


# --------------------------------------------------------------------------------------------------
# who is writing a run


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def live_writer(manifest: dict) -> str | None:
    """Who is still writing a ``running`` run (``pid N on HOST``), or None when it finished or died
    (its process is gone, or on another host its heartbeat is stale)."""
    if manifest.get("status") != "running" or not isinstance(manifest.get("pid"), int):
        return None
    pid, host = manifest["pid"], manifest.get("host")
    if host == socket.gethostname():
        alive = pid != os.getpid() and _pid_alive(pid)
    else:
        beat = manifest.get("heartbeat_at", 0)
        alive = isinstance(beat, (int, float)) and time.time() - beat < STALE_AFTER_S
    return f"pid {pid} on {host}" if alive else None


# --------------------------------------------------------------------------------------------------
# a run's place in a comparison


@dataclass(frozen=True)
class ComparisonEntry:
    """Where a run sits in a comparison, from the plan to the run's manifest (``compare_entry``): its
    label, the entry it came from (``group``), its sweep point and training seed, and the comparison (or,
    for a round of ``--until-converged``, the round) it belongs to."""

    label: str
    group: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)
    seed_index: int = 0
    comparison: str | None = None  # also the trackers' group of its run
    round: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``compare_entry``: every field but an unset comparison or round."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("comparison", "round")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComparisonEntry":
        """An entry from its manifest form; keys it does not know are ignored (no run writes any)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    @classmethod
    def from_manifest(cls, manifest: dict) -> "ComparisonEntry | None":
        data = manifest.get("compare_entry")
        return cls.from_dict(data) if isinstance(data, dict) and data.get("label") else None


# --------------------------------------------------------------------------------------------------
# a run folder


@dataclass
class RunFolder:
    """A run folder whose manifest has been read and validated; its summary and trajectory on demand."""

    path: Path
    manifest: dict

    @property
    def status(self) -> str:
        return self.manifest["status"]

    def summary(self, hint: str = OVERWRITE) -> EvalSummary:
        path = self.path / SUMMARY_FILE
        return EvalSummary.from_dict(check_summary(path, read_json(path, hint), hint))

    @property
    def entry(self) -> ComparisonEntry | None:
        return ComparisonEntry.from_manifest(self.manifest)

    def trajectory(self, hint: str = OVERWRITE) -> list[dict]:
        return read_trajectory(self.path / "eval" / "trajectory.jsonl", hint)

    @property
    def failed_in_evaluation(self) -> bool:
        """A run that failed evaluating the model it saved (its checksums recorded)."""
        return (self.status == "failed" and self.manifest.get("failed_in") == "evaluation"
                and isinstance(self.manifest.get("model_sha256"), dict))

    def require_trained(self, command: str) -> None:
        """:meth:`require_finished`, but a run that failed in evaluation passes too (``alignkit eval`` can
        evaluate it, with another judge say, without training it again)."""
        if not self.failed_in_evaluation:
            self.require_finished(command)

    def require_finished(self, command: str) -> None:
        """Refuse, in one line, a run that is not finished: failed, still running, or interrupted."""
        status = self.status
        if status == "done":
            return
        resume = "rerun `alignkit run` with its recipe and --out to resume it"
        if status == "failed":
            error = str(self.manifest.get("error") or "no error recorded")[:200]
            if self.failed_in_evaluation:
                resume = (f"its model was trained and saved: `alignkit eval {self.path}` evaluates it (--set "
                          f"eval.judge=... to change its judge)")
            raise RunFolderError(f"{self.path}: {command}: the run failed ({error}); {resume}")
        writer = live_writer(self.manifest) if status == "running" else None
        if writer:
            raise RunFolderError(f"{self.path}: {command}: the run is still running ({writer}); wait for it "
                                 "to finish")
        raise RunFolderError(f"{self.path}: {command}: the run was interrupted before it finished; {resume}")


def read_run(run_dir: str | Path, hint: str = OVERWRITE) -> RunFolder:
    """A run folder with its validated manifest; one line when it is none, or its manifest is unreadable."""
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not path.is_file():
        if (run_dir / "compare.json").is_file():
            raise RunFolderError(f"{run_dir}: not a run directory (no manifest.json): a comparison folder; "
                                 "pass "
                                 f"its runs, {run_dir / 'runs'}/LABEL")
        raise RunFolderError(f"{run_dir}: not a run directory (no manifest.json)")
    return RunFolder(run_dir, check_manifest(path, read_json(path, hint), hint))


# --------------------------------------------------------------------------------------------------
# claiming a run folder

RUN_MARKER = ".alignkit-run"  # written first into every run directory alignkit creates


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """``runs/NAME`` for ``alignkit run`` without ``--out``, with ``name`` checked not to escape ``root``."""
    return Path(root) / check_run_name(name)


def read_manifest(run_dir: Path) -> dict | None:
    """A run directory's manifest as plain data, or None when it has none (or an unreadable one)."""
    try:
        return read_json(Path(run_dir) / "manifest.json")
    except RunFolderError:
        return None


def recipe_difference(old: dict, new: dict) -> str | None:
    """The first dotted key where two resolved recipes differ, as ``key: old -> new``."""
    found = first_difference(old, new)
    return None if found is None else f"{found[0]}: {found[1]!r} -> {found[2]!r}"


def claim_run_dir(run_dir: Path, recipe: Recipe, overwrite: bool) -> str:
    """What to do with ``run_dir``: ``new`` (claimed now), ``resume`` (an interrupted or failed run of this
    recipe) or ``replace`` (``--overwrite``: built aside, swapped in on success). Refuses, changing nothing,
    a folder alignkit did not create, a finished run without ``--overwrite`` and a run still being written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise AlignkitError(f"{run_dir}: exists and is not a folder; choose another --out")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / RUN_MARKER).write_text(json.dumps({"created_by": f"alignkit {__version__}"}) + "\n")
        except OSError as exc:
            raise AlignkitError(f"{run_dir}: cannot create the run directory ({exc.strerror}); choose "
                                "another --out") from None
        return "new"
    manifest = read_manifest(run_dir)
    if not (run_dir / RUN_MARKER).is_file() and not (manifest if isinstance(manifest, dict) else {}).get(
        "alignkit_run"
    ):
        raise AlignkitError(f"{run_dir}: exists, is not empty and is not an alignkit run directory (no "
                            f"{RUN_MARKER}); "
                            "alignkit never writes into it, even with --overwrite; choose another --out")
    # a corrupt or foreign manifest: one line, no guess
    if (run_dir / "manifest.json").exists() and not overwrite:
        manifest = read_run(run_dir, "pass --overwrite to start the run over").manifest
    writer = live_writer(manifest if isinstance(manifest, dict) else {})
    if writer:
        raise AlignkitError(f"{run_dir}: a run is still being written there ({writer}); wait for it or stop "
                            "it")
    if overwrite:
        return "replace"
    if manifest and manifest.get("status") == "done":
        raise AlignkitError(
            f"{run_dir} already holds a run (manifest.json); pass --overwrite or choose --out"
        )
    if manifest:
        difference = recipe_difference(manifest.get("recipe"), jsonable(to_dict(recipe)))
        if difference:
            raise AlignkitError(f"{run_dir}: holds an unfinished run of a different recipe ({difference}); "
                                "pass --overwrite to start over, or rerun with its recipe to resume it")
    return "resume"


COMPARISON_MARKER = ".alignkit-comparison"


def claim_comparison_dir(folder: str | Path) -> Path:
    """Make ``folder`` a comparison folder alignkit owns, or accept one it already owns; refuse, changing
    nothing, a non-empty folder alignkit did not create (its own files could be overwritten)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AlignkitError(f"{folder}: exists and is not a folder; choose another --out")
    owned = (folder / COMPARISON_MARKER).is_file() or (folder / "compare.json").is_file()
    if folder.is_dir() and any(folder.iterdir()) and not owned:
        raise AlignkitError(f"{folder}: exists, is not empty and is not an alignkit comparison folder (no "
                            f"{COMPARISON_MARKER}); alignkit never writes into it; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COMPARISON_MARKER).touch()
    except OSError as exc:
        raise AlignkitError(f"{folder}: cannot write the comparison there ({exc.strerror}); choose another "
                            "--out") \
            from None
    return folder
