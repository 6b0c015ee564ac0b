"""Run directories alignkit owns: the marker that claims one, who (if anyone) is still writing it, and
what a new ``alignkit run`` may do with an existing one (start, resume, replace, or refuse). alignkit only
ever changes folders it created."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit import __version__
from alignkit.config import first_difference, to_dict
from alignkit.errors import AlignkitError
from alignkit.recipe import Recipe, check_run_name
from alignkit.runfolder import live_writer, read_run
from alignkit.runlog import jsonable

__all__ = ["RUN_MARKER", "check_run_name", "default_run_dir", "read_manifest", "live_writer", "claim_run_dir",
           "claim_comparison_dir", "recipe_difference", "COMPARISON_MARKER"]

RUN_MARKER = ".alignkit-run"  # written first into every run directory alignkit creates


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """``runs/NAME`` for ``alignkit run`` without ``--out``, with ``name`` checked not to escape ``root``."""
    return Path(root) / check_run_name(name)


def read_manifest(run_dir: Path) -> dict | None:
    """A run directory's manifest, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
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
            raise AlignkitError(f"{run_dir}: cannot create the run directory ({exc.strerror}); choose another "
                                "--out") from None
        return "new"
    manifest = read_manifest(run_dir)
    if not (run_dir / RUN_MARKER).is_file() and not (manifest if isinstance(manifest, dict) else {}).get("alignkit_run"):
        raise AlignkitError(f"{run_dir}: exists, is not empty and is not an alignkit run directory (no {RUN_MARKER}); "
                            "alignkit never writes into it, even with --overwrite; choose another --out")
    if (run_dir / "manifest.json").exists() and not overwrite:  # a corrupt or foreign manifest: one line, no guess
        manifest = read_run(run_dir, "pass --overwrite to start the run over").manifest
    writer = live_writer(manifest if isinstance(manifest, dict) else {})
    if writer:
        raise AlignkitError(f"{run_dir}: a run is still being written there ({writer}); wait for it or stop it")
    if overwrite:
        return "replace"
    if manifest and manifest.get("status") == "done":
        raise AlignkitError(f"{run_dir} already holds a run (manifest.json); pass --overwrite or choose --out")
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
        raise AlignkitError(f"{folder}: cannot write the comparison there ({exc.strerror}); choose another --out") \
            from None
    return folder
