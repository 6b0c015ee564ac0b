"""The recipes bundled in this folder, and how a name finds one: ``dpo_imdb``, ``recipes/dpo_imdb.yaml``
or ``smollm2/dpo_imdb`` all resolve to the file shipped here, so a plain ``pip install`` has every default
recipe."""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parent


def bundled_recipe(name: str) -> Path | None:
    """A recipe shipped inside the package (``alignkit/recipes/NAME.yaml``; NAME may name a subfolder, as in
    ``smollm2/dpo_imdb``), so that a plain ``pip install`` has every default recipe; None if there is none."""
    path = BUNDLED / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return path if path.is_file() and path.resolve().is_relative_to(BUNDLED) else None


def _inside_bundled(path: Path) -> str:
    """The part of ``path`` after its last ``recipes`` folder (``recipes/smollm2/dpo_imdb.yaml`` ->
    ``smollm2/dpo_imdb.yaml``), else the whole path: the name a bundled recipe would have."""
    parts = path.parts
    cut = max((i + 1 for i, part in enumerate(parts[:-1]) if part == "recipes"), default=0)
    return "/".join(parts[cut:])


def resolve_recipe_path(spec: str | Path) -> Path:
    """An existing file as given, else a bundled recipe of that name (``dpo_imdb``, ``recipes/dpo_imdb.yaml``,
    ``smollm2/dpo_imdb`` all work from any folder); else the path as given, which then fails clearly.
    A name in a bundled subfolder never falls back to the top-level recipe of the same file name."""
    path = Path(spec)
    if path.is_file():
        return path
    inside = _inside_bundled(path)
    found = bundled_recipe(inside)
    if found is None and not _names_bundled_subfolder(inside):
        found = bundled_recipe(path.name)  # e.g. configs/dpo_imdb.yaml, as before
    return found or path


def _names_bundled_subfolder(name: str) -> bool:
    """Whether ``name`` lies in a subfolder of the bundled recipes (``smollm2/kto_imdb``)."""
    parent = (BUNDLED / name).parent
    return parent.is_dir() and parent.resolve() != BUNDLED and parent.resolve().is_relative_to(BUNDLED)
