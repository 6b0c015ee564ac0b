"""The embedded IMDb task's shared stages shipped inside the package at the quick start's settings
(``alignkit/stages/shipped/<asset>/``): the gold reward's weights, the preference pairs and the reference
policy's log-probs of the training pairs. Built here they depend on the thread count and the CPU's float order
(the pairs are sampled); shipped, every machine starts from the same bytes and skips about a minute of work.

Each folder is checked as a shipped model's is (:mod:`alignkit.models.shipped`: data-only files, a manifest
with every file's sha256, an unlisted or changed file refused in one line) and holds what ``made_by`` names:
the stage's cache key as a local build computes it. A stage whose key is that one loads the shipped files;
any other (another seed, ``--replicates``, your data, another model) builds its own as before. The keys built
on a shipped stage carry its files' checksums (:func:`stage_key`), so a changed asset never reuses results
built on the old one. ``scripts/make_builtin_models.py`` writes them, 1 thread, byte for byte on a rerun."""

from __future__ import annotations

from pathlib import Path

from alignkit.config import fingerprint
from alignkit.models.shipped import shipped_identity, shipped_model

ASSETS = Path(__file__).resolve().parent / "shipped"
RECIPE = "dpo_imdb"  # the bundled recipe whose shared stages ship (every IMDb recipe shares them)
# their folders, in the order they are built (each on the one before)
GOLD, PAIRS, REFERENCE_LOGPS = "imdb-sentiment", "imdb-pairs", "imdb-reference-logps"
PAIRS_FILE, LOGPS_FILE = "pairs.jsonl", "reference_logps.safetensors"


def shipped_stage(asset: str, made_by: str) -> Path | None:
    """The verified folder of ``asset`` when the package ships one made for the key ``made_by``, else None."""
    return shipped_model(asset, made_by, ASSETS)


def asset_identity(asset: str, made_by: str) -> str | None:
    """The checksums of ``asset``'s shipped files when the package ships it for the key ``made_by``, else None
    (read from its manifest; :func:`shipped_stage` hashes the files)."""
    return shipped_identity(asset, made_by, ASSETS)


def stage_key(asset: str, made_by: str) -> str:
    """The key a stage is recorded and cached under: ``made_by`` (a local build's key, as before anything
    shipped), with the shipped files' checksums added when the package ships ``asset`` for it."""
    identity = asset_identity(asset, made_by)
    return made_by if identity is None else fingerprint(made_by, identity)
