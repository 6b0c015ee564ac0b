"""Gold sentiment reward (DPO paper, IMDb): TF-IDF word 1-2-grams + logistic regression.

The fitted model is stored as plain JSON + safetensors, so loading a reward never executes code, and the same
fit writes the same bytes (an .npz records when it was written), which lets the package ship one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

FORMAT_VERSION = 2  # 1: weights.npz
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _clean(texts) -> list[str]:
    """Replace IMDb "<br />" tags with spaces (same in fit and score, so they never become features)."""
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single str")
    return [_BR.sub(" ", t) for t in texts]


def _vectorizer(**kw) -> TfidfVectorizer:
    """The one TF-IDF configuration used for both fitting and scoring."""
    return TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, dtype=np.float64, **kw)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to a temp file in the same folder, then os.replace it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _binary_labels(labels) -> np.ndarray:
    """Labels as int64 0/1 (accepts ints, bools, floats or "0"/"1" strings); anything else is an error."""
    y = np.asarray(labels).astype(np.float64).reshape(-1)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 1 = positive, 0 = negative")
    return y.astype(np.int64)


class SentimentClassifier:
    """P(positive) of a text from TF-IDF (1-2-grams) + logistic regression; stored without pickle."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: float,
                 meta: dict):
        self.vocabulary = {str(k): int(v) for k, v in vocabulary.items()}
        self.idf = np.asarray(idf, dtype=np.float64).reshape(-1)
        self.coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        self.intercept = float(intercept)
        self.meta = dict(meta)
        n = len(self.vocabulary)
        if not (len(self.idf) == len(self.coef) == n) or set(self.vocabulary.values()) != set(range(n)):
            raise ValueError(f"inconsistent model: vocab {n}, idf {len(self.idf)}, coef {len(self.coef)}")
        # A TfidfVectorizer with fixed vocabulary and idf_ set transforms exactly like the fitted one.
        self._vec = _vectorizer(vocabulary=self.vocabulary)
        self._vec.idf_ = self.idf

    @classmethod
    def fit(cls, texts: list[str], labels: list[int] | np.ndarray, heldout_texts: list[str],
            heldout_labels: list[int] | np.ndarray, *,
            max_features: int = 100_000, C: float = 4.0, seed: int = 0) -> SentimentClassifier:
        """Fit on texts/labels (1 = positive); record accuracy on the heldout set in meta."""
        y = _binary_labels(labels)
        if len(np.unique(y)) != 2:
            raise ValueError("training labels must contain both classes")
        vec = _vectorizer(max_features=max_features)
        X = vec.fit_transform(_clean(texts))
        lr = LogisticRegression(C=C, solver="liblinear", random_state=seed).fit(X, y)
        vocab = {t: int(i) for t, i in vec.vocabulary_.items()}
        meta = {"n_train": len(y), "max_features": int(max_features), "n_features": len(vocab), "C": float(C),
                "seed": int(seed), "format_version": FORMAT_VERSION}
        model = cls(vocab, vec.idf_, lr.coef_[0], float(lr.intercept_[0]), meta)
        y_held = _binary_labels(heldout_labels)
        if len(y_held) != len(heldout_texts):
            raise ValueError(f"{len(heldout_texts)} heldout texts but {len(y_held)} labels")
        model.meta["n_heldout"] = len(y_held)
        # Accuracy of the stored parameters (what score() computes), not just of the sklearn object.
        acc = float(np.mean((model.score(heldout_texts) > 0.5) == y_held)) if len(y_held) else None
        model.meta["heldout_accuracy"] = acc
        return model

    def score(self, texts: list[str]) -> np.ndarray:
        """float64 P(positive) in [0, 1] per text, identical to the fitted pipeline's predict_proba[:, 1]."""
        cleaned = _clean(texts)
        if not cleaned:
            return np.zeros(0, dtype=np.float64)
        X = self._vec.transform(cleaned)
        return expit(np.asarray(X @ self.coef[:, None]).reshape(-1) + self.intercept)

    def save(self, folder: str | Path) -> None:
        """Write vocabulary.json, weights.safetensors (idf, coef, intercept) and meta.json, each
        atomically."""
        from safetensors.numpy import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "vocabulary.json", json.dumps(self.vocabulary, ensure_ascii=False).encode())
        _atomic_write(folder / "weights.safetensors", save({"idf": self.idf, "coef": self.coef,
                                                            "intercept": np.array([self.intercept])}))
        _atomic_write(folder / "meta.json", json.dumps(self.meta, indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, folder: str | Path) -> SentimentClassifier:
        """Read a saved model; plain JSON and safetensors, so no code can run."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {meta.get('format_version')!r} in {folder}")
        vocabulary = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        if not isinstance(vocabulary, dict) or not all(isinstance(v, int) for v in vocabulary.values()):
            raise ValueError(f"{folder}/vocabulary.json must map term -> integer column")
        w = load_file(folder / "weights.safetensors")
        return cls(vocabulary, w["idf"], w["coef"], float(w["intercept"][0]), meta)
