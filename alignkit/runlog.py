"""Run-directory writing: atomic files and the per-step metrics log (``metrics.jsonl``).

Every JSON file alignkit writes is strict JSON: a non-finite float (NaN, inf) is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from alignkit.errors import AlignkitError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def jsonable(value: Any) -> Any:
    """``value`` as strict-JSON data: tensors/numpy scalars as numbers, NaN and +-inf as None, recursively."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(data: Any, **kwargs) -> str:
    """``json.dumps`` that never writes NaN/Infinity (invalid JSON): non-finite floats become null."""
    return json.dumps(jsonable(data), allow_nan=False, default=jsonable, **kwargs)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    write_text(path, dumps(data, indent=2, sort_keys=False) + "\n")


class WriteError(AlignkitError):
    """A file alignkit could not write (no space, read-only, name too long): one line naming it."""


def write_error(path: str | Path, exc: OSError) -> WriteError:
    """One line for an ``OSError`` raised writing ``path``: which file, why, and that nothing was lost."""
    return WriteError(f"{exc.filename or path}: could not be written ({exc.strerror or exc}); what was there "
                      "before is kept; free space (or choose another --out) and rerun the same command")


def _fill(handle, text: str, path: Path) -> None:
    """The one place ``path``'s bytes are written (tests patch it to simulate a full disk)."""
    handle.write(text)


def write_text(path: str | Path, text: str) -> None:
    """Write atomically (a temporary sibling renamed into place): on any error the old file stays as it
    was, the temporary goes, and an ``OSError`` becomes one :class:`WriteError` line naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:60]}.", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            _fill(handle, text, path)
        # mkstemp makes owner-only files; a published result is an ordinary file
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    write_text(path, "".join(dumps(r) + "\n" for r in rows))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name and move it into place only when the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            yield tmp
        except OSError as exc:  # the block's own writes (a model's weights): the old folder stays
            raise write_error(exc.filename or path, exc) from None
        aside = path.with_name(f".{path.name}.old-{os.getpid()}") if path.exists() else None
        try:
            if aside is not None:  # the old folder moves aside and comes back if the new one cannot go in
                os.replace(path, aside)
            try:
                os.replace(tmp, path)
            except OSError:
                if aside is not None:
                    os.replace(aside, path)
                raise
        except OSError as exc:
            raise write_error(path, exc) from None
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def all_or_nothing(files: Iterable[str | Path], folders: Iterable[str | Path] = ()) -> Iterator[None]:
    """Rewrite a set of recorded files together or not at all: ``files`` and every file under ``folders`` are
    put back as they were when the block fails (a file it created is removed). Each old file is kept by a hard
    link (no space needed; a copy where links are not allowed) and renamed back, since every alignkit write
    replaces a file rather than changing it."""
    paths = [Path(f) for f in files]
    for folder in map(Path, folders):
        paths += [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    kept: dict[Path, Path] = {}
    try:
        for path in paths:
            if path.is_file() and path not in kept:
                kept[path] = path.with_name(f".{path.name[:60]}.kept-{os.getpid()}")
                try:
                    os.link(path, kept[path])
                except OSError:
                    shutil.copy2(path, kept[path])
    except OSError as exc:
        for copy in kept.values():
            copy.unlink(missing_ok=True)
        raise write_error(exc.filename or paths[0], exc) from None
    before = set(kept)
    try:
        yield
    except BaseException:
        for folder in map(Path, folders):  # what the block added
            for path in (folder.rglob("*") if folder.is_dir() else []):
                if path.is_file() and path not in before and ".kept-" not in path.name:
                    path.unlink(missing_ok=True)
        for path in paths:
            if path not in before:
                path.unlink(missing_ok=True)
        for path, copy in kept.items():
            os.replace(copy, path)
            copy.unlink(missing_ok=True)  # a file the block left alone: the same file, which rename leaves
        raise
    for copy in kept.values():
        copy.unlink(missing_ok=True)


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (or keeps them in memory), and hands it
    to ``sink`` (the run's experiment trackers, ``alignkit.trackers``) when there is one."""

    def __init__(self, path: str | Path | None = None, sink: Any = None):
        self.path = Path(path) if path else None
        self.sink = sink
        self.records: list[dict] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        record = {"stage": stage, "step": step, **{k: jsonable(v) for k, v in metrics.items()}}
        self.records.append(record)
        if self.path:
            try:
                with open(self.path, "a") as handle:
                    handle.write(dumps(record) + "\n")
            except OSError as exc:
                raise write_error(self.path, exc) from None
        if self.sink:
            self.sink.log(stage, step, metrics)

    def position(self) -> int:
        """The log's length in bytes: where a resumed run continues it (see :meth:`truncate`)."""
        return self.path.stat().st_size if self.path and self.path.is_file() else 0

    def truncate(self, position: int) -> None:
        """Drop what was logged after ``position`` (records of steps a resumed run will repeat)."""
        if self.path and self.path.is_file() and self.path.stat().st_size > position:
            with open(self.path, "r+b") as handle:
                handle.truncate(position)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line (a trajectory point, a metric record); the folder is made if needed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(dumps(row) + "\n")
    except OSError as exc:
        raise write_error(path, exc) from None


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )
