"""Self-healing cache entries: every cached artifact (a file or a folder) is published together with a
completeness marker that records each file's size and sha256, so a truncated, half-written or tampered
entry is detected and rebuilt instead of being trusted.

Layout under a cache root (``kind`` is a subfolder such as ``preferences`` or ``reward_models``)::

    <root>/<kind>/<name>                      the artifact (what ``CacheEntry.path`` points to)
    <root>/<kind>/<name>/CACHE_ENTRY.json     its marker, when the artifact is a folder
    <root>/<kind>/<name>.CACHE_ENTRY.json     its marker, when the artifact is a single file
    <root>/.locks/<kind>/<name>.lock          the build lock (kept out of ``<kind>`` so listing it shows
    artifacts)
    <root>/<kind>/.<name>.*                   temporary build folders; any left by a killed builder are
    removed

The marker is ``{"format", "kind", "key", "files": {relpath: {"size", "sha256"}}, "created_at",
"alignkit_version"}`` and is written last: an entry without one (an interrupted build, or one written by
an alignkit older than this module) is incomplete. Sizes are checked on every load; the sha256 of every
file once per process per entry, and again only when a file's stat (size, mtime, inode) changes, so a
multi-GB model folder is hashed once per process, not on every access.

Builds run under an exclusive ``fcntl.flock``: a second process wanting the same entry waits, re-checks and
loads what the first one published. Publication is an atomic rename of a complete temporary folder
(folder entries) or of the file followed by its marker (file entries), so readers never see half an entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import alignkit
from alignkit.console import get_logger
from alignkit.runtime import Runtime

LOG = get_logger("cache")

ENTRY_MARKER = "CACHE_ENTRY.json"
FORMAT = 1
T = TypeVar("T")

# entry path -> stat signature of the marker and files whose sha256 this process has already verified
_VERIFIED: dict[Path, tuple] = {}


def forget_verified() -> None:
    """Drop this process's memo of verified checksums (the next load hashes again, as a new process would)."""
    _VERIFIED.clear()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stat_signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def default_cache_dir() -> Path:
    """``$ALIGNKIT_CACHE``, else ``~/.cache/alignkit``: builtin models, gold rewards, generated pairs."""
    return Path(os.environ.get("ALIGNKIT_CACHE") or Path.home() / ".cache" / "alignkit")


class CacheEntry:
    """One cached artifact: ``<root>/<kind>/<key><suffix>``, a folder when ``suffix`` is empty, else a file.

    ``ensure(build)`` is the one way artifacts enter the cache: it returns the path of a verified entry,
    building it (under the lock, into a temporary sibling) when it is missing, partial or corrupt.
    """

    def __init__(self, root: str | Path, kind: str, key: str, suffix: str = ""):
        self.root, self.kind, self.key, self.suffix = Path(root), kind, key, suffix
        self.name = f"{key}{suffix}"
        self.path = self.root / kind / self.name
        self.is_folder = not suffix
        self.marker_path = (
            self.path / ENTRY_MARKER if self.is_folder else self.path.with_name(f"{self.name}.{ENTRY_MARKER}")
        )
        self.lock_path = self.root / ".locks" / kind / f"{self.name}.lock"

    def __repr__(self) -> str:
        return f"CacheEntry({self.kind}/{self.name})"

    # ---------------------------------------------------------------------------------------------
    # verification

    def _files(self) -> dict[str, Path]:
        """The artifact's files by marker relpath (the marker itself excluded)."""
        if not self.is_folder:
            return {self.name: self.path}
        return {p.relative_to(self.path).as_posix(): p for p in sorted(self.path.rglob("*"))
                if p.is_file() and p != self.marker_path}

    def problem(self) -> str | None:
        """Why the entry cannot be trusted, as ``"is <state> (<detail>)"``; None when it verifies.

        ``"missing"`` means there is nothing at all (a first build, not worth a notice)."""
        exists = self.path.is_dir() if self.is_folder else self.path.is_file()
        has_marker = self.marker_path.is_file()
        if not exists and not (has_marker or self.path.exists()):
            return "missing"
        if not has_marker:
            return (f"is incomplete (no {ENTRY_MARKER} marker: written by an older alignkit without one, "
                    f"or its build was interrupted)")
        if not exists:
            return "is incomplete (the artifact is missing, only its marker is left)"
        try:
            marker = json.loads(self.marker_path.read_text())
            recorded = {rel: (int(f["size"]), str(f["sha256"])) for rel, f in marker["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return f"is corrupt ({ENTRY_MARKER}: unreadable, {type(err).__name__})"
        if (marker.get("kind"), marker.get("key")) != (self.kind, self.key):
            return f"is corrupt ({ENTRY_MARKER}: describes {marker.get('kind')}/{marker.get('key')})"
        present = self._files()
        extra = sorted(set(present) - set(recorded))
        if extra:
            return f"is corrupt ({extra[0]}: not part of the entry)"
        signature = [_stat_signature(self.marker_path)]
        for rel, (size, _) in sorted(recorded.items()):
            if rel not in present:
                return f"is incomplete ({rel}: missing)"
            sig = _stat_signature(present[rel])
            if sig[0] != size:
                return f"is corrupt ({rel}: {sig[0]} bytes, expected {size})"
            signature.append((rel, *sig))
        signature = tuple(signature)
        if _VERIFIED.get(self.path) == signature:
            return None
        for rel, (_, sha) in sorted(recorded.items()):
            if sha256_file(present[rel]) != sha:
                return f"is corrupt ({rel}: checksum mismatch)"
        _VERIFIED[self.path] = signature
        return None

    def load(self) -> Path:
        """The artifact's path after verifying it; ``CorruptEntry`` when it is missing, partial or corrupt."""
        problem = self.problem()
        if problem is not None:
            raise CorruptEntry(self, problem)
        return self.path

    # ---------------------------------------------------------------------------------------------
    # building

    def ensure(self, build: Callable[[Path], object], runtime: Runtime) -> Path:
        """The verified artifact's path, building it first if needed: ``build(tmp)`` must write the
        artifact to ``tmp`` (a fresh folder for folder entries; a file path in one for file entries).
        Under data parallelism (``runtime.world`` > 1) the processes build it together."""
        if runtime.world > 1:
            return self._ensure_together(build, runtime)
        if self.problem() is None:
            return self.path
        with self._locked():
            problem = self.problem()  # another process may have built it while we waited
            if problem is None:
                return self.path
            self._announce(problem)
            self._build(build)
        return self.path

    def _ensure_together(self, build: Callable[[Path], object], runtime: Runtime) -> Path:
        """Data parallel: the main process decides whether the entry must be built; then every process
        builds it (a build may share its work out between them) and only the main one publishes it."""
        problem = self.problem() if runtime.is_main else None
        missing = runtime.broadcast(problem is not None if runtime.is_main else None)
        if missing and runtime.is_main:
            with self._locked():
                self._announce(problem)
                self._build(build)
        elif missing:
            scratch = Path(tempfile.mkdtemp(prefix=f"alignkit-{self.kind}-"))
            try:
                build(scratch if self.is_folder else scratch / self.name)
            finally:
                _remove(scratch)
        runtime.barrier()
        return self.path

    def _announce(self, problem: str | None) -> None:
        """Say, before a rebuild starts (it can take minutes), that a bad entry was found and why."""
        if problem is None or problem == "missing":
            return
        what = (
            f"failed its checksum ({problem[len('is corrupt (') : -1]})"
            if problem.startswith("is corrupt (")
            else problem
        )
        LOG.warning("%s/%s %s; rebuilding", self.kind, self.name, what)

    def fetch(self, build: Callable[[Path], T], load: Callable[[Path], T], runtime: Runtime) -> T:
        """The artifact as an object: what ``build(tmp)`` returned when this call built it (no re-read),
        else ``load(path)`` of the verified entry."""
        built: list[T] = []
        path = self.ensure(lambda tmp: built.append(build(tmp)), runtime)
        return built[0] if built else load(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive build lock on ``<root>/.locks/<kind>/<name>.lock``; released when the holder dies."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _temporaries(self) -> list[Path]:
        """Hidden siblings ``.<name>.*``: build folders of this module and temp files of older alignkits."""
        return list(self.path.parent.glob(f".{self.name}.*"))

    def _discard_published(self) -> None:
        """Move a bad published artifact aside in one rename (readers then see it missing) and delete it."""
        if self.path.exists() or self.path.is_symlink():
            aside = self.path.with_name(f".{self.name}.discarded-{os.getpid()}")
            os.replace(self.path, aside)
            _remove(aside)

    def _build(self, build: Callable[[Path], object]) -> None:
        """Under the lock: clear stale temporaries, build into a temp sibling, write the marker
        last, publish."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self._temporaries():  # we hold the lock, so no live builder owns these
            _remove(stale)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.name}.build-", dir=self.path.parent))
        try:
            target = staging if self.is_folder else staging / self.name
            build(target)
            if not (target.is_dir() if self.is_folder else target.is_file()):
                raise RuntimeError(f"{self}: the builder wrote no {'folder' if self.is_folder else 'file'}")
            self.marker_path.unlink(missing_ok=True)  # the old entry, if any, is no longer complete
            files = {self.name: target} if not self.is_folder else {
                p.relative_to(target).as_posix(): p for p in sorted(target.rglob("*")) if p.is_file()}
            marker = {"format": FORMAT, "kind": self.kind, "key": self.key,
                      "files": {rel: {"size": p.stat().st_size, "sha256": sha256_file(p)} for rel,
                                p in files.items()},
                      "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "alignkit_version": alignkit.__version__}
            if self.is_folder:
                (target / ENTRY_MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last file written
                self._discard_published()
                os.replace(target, self.path)
            else:
                if self.path.is_dir():
                    self._discard_published()
                os.replace(target, self.path)
                staged_marker = staging / ENTRY_MARKER
                staged_marker.write_text(json.dumps(marker, indent=2) + "\n")
                os.replace(staged_marker, self.marker_path)  # last: the entry is complete from here on
            _VERIFIED.pop(self.path, None)
        finally:
            _remove(staging)


class CorruptEntry(Exception):
    """A cache entry that is missing, partial or corrupt."""

    def __init__(self, entry: CacheEntry, problem: str):
        super().__init__(f"cache entry {entry.kind}/{entry.name} {problem}")
        self.entry, self.problem = entry, problem


def _remove(path: Path) -> None:
    """Delete a file or folder if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
