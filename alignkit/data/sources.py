"""Rows of preference (or prompt) data from where a user keeps them: a .jsonl, .json, .csv/.tsv or .parquet
file, a folder written by ``datasets``' ``save_to_disk``, or a Hub dataset ``hf:ORG/NAME`` (with a split and
an optional config name), or a dataset shipped with alignkit, ``builtin:NAME``
(``alignkit/datasets/NAME.jsonl``, e.g. ``builtin:support-chat``). Every reader returns plain Python rows
(lists of messages stay lists), so each
format yields exactly the rows a JSONL file of the same data does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from alignkit.errors import DataError

FILE_TYPES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
BUILTIN_PREFIX = "builtin:"
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "datasets"


def bundled_datasets() -> list[str]:
    """The names of the datasets shipped inside the package (``builtin:NAME``)."""
    return sorted(p.stem for p in BUNDLED_DATA.glob("*.jsonl"))


def local_source(source: str, what: str = "preferences.source") -> str:
    """``builtin:NAME`` as the path of the file shipped with alignkit (so a plain ``pip install`` has it, from
    any
    folder); any other source as given."""
    if not source.startswith(BUILTIN_PREFIX):
        return source
    name = source[len(BUILTIN_PREFIX):]
    path = BUNDLED_DATA / f"{name}.jsonl"
    if not path.is_file() or path.parent != BUNDLED_DATA:
        raise DataError(f"{what}: {source}: no dataset of that name ships with alignkit (builtin datasets: "
                        f"{', '.join(BUILTIN_PREFIX + n for n in bundled_datasets()) or 'none'})")
    return str(path)


def read_rows(source: str, split: str = "train", config: str = "", what: str = "preferences.source") -> list:
    """The rows of ``source`` (see the module docstring); errors are one line naming ``what`` and
    the source."""
    if source.startswith("hf:"):
        return read_hub(source[3:], split, config, what)
    path = Path(local_source(source, what))
    if path.is_dir():
        return read_saved_dataset(path, split, what)
    return read_file(path, what)


def source_digest(source: str) -> str | None:
    """The content of a local file or saved-dataset folder as a hash (so a cache key follows the data, not its
    name); None for a Hub dataset or anything not on disk."""
    try:
        path = Path(local_source(source))
    except DataError:
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()
    return None


def read_file(path: Path, what: str = "preferences.source") -> list:
    """Rows of a .jsonl, .json (a list of rows, or {"data": [...]}), .csv/.tsv (all values text) or
    .parquet file."""
    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise DataError(f"{what}: {path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv, "
                        ".parquet, "
                        f"a save_to_disk folder or hf:DATASET_ID)")
    origin = f"{what}: {path}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{origin}: cannot read Parquet: {str(exc).strip().splitlines()[0]}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{origin}: cannot parse JSONL: line {number}: {exc.msg}") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{origin}: cannot parse JSON: line {exc.lineno}: {exc.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            return data["data"]
        if not isinstance(data, list):
            kind = f"{type(data).__name__} {data!r}"[:60]
            raise DataError(f"{origin}: expected a JSON list of rows (or {{\"data\": [...]}}), got {kind}")
        return data
    import io

    import pandas as pd

    if not text.strip():
        return []
    try:
        frame = pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", dtype=str,
                            keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(
            f"{origin}: cannot parse {suffix[1:].upper()}: {str(exc).strip().splitlines()[0]}"
        ) from None
    return frame.to_dict("records")


def read_saved_dataset(path: Path, split: str, what: str = "preferences.source") -> list[dict]:
    """Rows of a folder written by ``Dataset.save_to_disk`` (or a ``DatasetDict``'s, taking ``split``)."""
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # not a saved dataset: one line naming the folder
        raise DataError(
            f"{what}: {path} is a folder but not one written by datasets' save_to_disk "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise DataError(f"{what}: {path}: no split {split!r} (splits: {', '.join(dataset)}; "
                            f"set preferences.split)")
        dataset = dataset[split]
    return [dict(row) for row in dataset]


def read_hub(name: str, split: str, config: str = "", what: str = "preferences.source") -> list[dict]:
    """Rows of ``datasets.load_dataset(name, config, split=split)``; any failure (offline, unknown id, split
    or
    config) is one line naming the dataset."""
    import datasets

    where = f"hf:{name}" + (f" config {config!r}" if config else "") + f" split {split!r}"
    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # offline, unknown id, config or split: one line, naming the dataset
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{what}: cannot load {where}: {detail}") from exc
    return [dict(row) for row in dataset]
