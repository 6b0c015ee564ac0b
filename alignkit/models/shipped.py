"""The builtin models shipped inside the package (``alignkit/models/shipped/<alias>/``), so every machine
starts from the same bytes instead of training its own (whose weights depend on the thread count and the
CPU's float order). Each folder holds safetensors weights and JSON tokenizer files only (nothing a load could
execute) and ``alignkit_shipped.json``: what made it (the builder's identity: recipe, and data where it has
some), the thread count and versions it was built with, and every file's sha256.
``scripts/make_builtin_models.py`` writes them, byte for byte the same on a rerun with the same versions and
thread count (``--check`` verifies that). The IMDb task's shipped stages are checked the same way
(:mod:`alignkit.stages.shipped_stages`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

from alignkit.config import fingerprint
from alignkit.errors import AlignkitError

SHIPPED = Path(__file__).resolve().parent / "shipped"
MANIFEST = "alignkit_shipped.json"
SAFE_SUFFIXES = (".safetensors", ".json", ".jsonl", ".jinja", ".txt")  # data only: no pickle, no code
MODEL_PACKAGES = ("torch", "transformers", "tokenizers")  # the versions a model's manifest records


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe(folder: Path, made_by: str, recipe: dict, threads: int,
             packages: tuple[str, ...] = MODEL_PACKAGES) -> dict:
    """The manifest of a freshly built ``folder``: what made it, how (thread count, the versions of
    ``packages``), and each file's checksum."""
    files = {p.name: sha256(p) for p in sorted(Path(folder).iterdir()) if p.name != MANIFEST}
    unsafe = [name for name in files if not name.endswith(SAFE_SUFFIXES)]
    if unsafe:
        raise AlignkitError(f"{folder}: {', '.join(unsafe)}: not a data-only file "
                            f"({', '.join(SAFE_SUFFIXES)})")
    return {"made_by": made_by, "recipe": recipe, "threads": threads,
            "versions": {name: importlib.metadata.version(name) for name in packages}, "files": files}


def _manifest(alias: str, root: Path) -> dict | None:
    path = root / alias / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        return data if isinstance(files, dict) and isinstance(data["made_by"], str) else None
    except (ValueError, KeyError, TypeError):
        raise AlignkitError(f"{path}: unreadable manifest of a shipped folder; reinstall alignkit") from None


def shipped_model(alias: str, made_by: str, root: Path | None = None) -> Path | None:
    """The shipped folder of builtin ``alias`` when the package holds one made by ``made_by`` (the builder's
    identity for the recipe asked for), checked file by file; None when there is none or it was made by
    another recipe or data (then the model is built as before). A shipped file that fails its checksum, or
    any file it does not list, is one error line: a damaged install is never used, nor silently replaced."""
    root = SHIPPED if root is None else root
    data = _manifest(alias, root)
    if data is None or data["made_by"] != made_by:
        return None
    folder = root / alias
    listed = set(data["files"]) | {MANIFEST}
    for path in sorted(folder.iterdir()):
        if path.name not in listed:
            raise AlignkitError(f"{path}: not listed in {MANIFEST} of the shipped folder; remove it or "
                                "reinstall")
    for name, digest in data["files"].items():
        path = folder / name
        if not name.endswith(SAFE_SUFFIXES) or not path.is_file() or sha256(path) != digest:
            raise AlignkitError(f"{path}: missing or not the shipped bytes (sha256 differs from {MANIFEST}); "
                                f"reinstall alignkit or run scripts/make_builtin_models.py")
    return folder


def shipped_identity(alias: str, made_by: str, root: Path | None = None) -> str | None:
    """The shipped model's identity in cache keys (its files' checksums), or None when none is shipped for
    ``made_by``; read from the manifest without hashing the weights (:func:`shipped_model` checks them)."""
    data = _manifest(alias, SHIPPED if root is None else root)
    if data is None or data["made_by"] != made_by:
        return None
    return fingerprint("shipped-1", sorted(data["files"].items()))
