"""Diversity of sampled completions (distinct-1/2 and self-BLEU), reported next to the reward so mode
collapse shows. The metrics are `evaluate` modules shipped inside the package (alignkit/eval/metrics)."""

from __future__ import annotations

import functools
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    """The `evaluate` module in METRICS_DIR/<name>, loaded once per process.

    Offline-safe without any env var: evaluate 0.4.6 resolves an absolute folder path holding <name>.py
    with LocalEvaluationModuleFactory, which only copies the script into HF_MODULES_CACHE and imports it;
    the Hub (and its download counter) is consulted only for relative names like "bleu", so neither
    HF_HUB_OFFLINE nor HF_EVALUATE_OFFLINE changes anything here. keep_in_memory keeps compute() from
    writing an Arrow cache file and lock under ~/.cache/huggingface/metrics on every call.
    """
    import evaluate  # the Hugging Face library (absolute import, not alignkit.eval.evaluator); slow to import

    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(f"metric module {name!r} is missing from {folder}")
    return evaluate.load(str(folder), keep_in_memory=True)


def diversity(texts: list[str]) -> dict[str, float]:
    """distinct-1, distinct-2 (higher = more diverse) and self-BLEU (higher = less diverse) of texts,
    words being lowercase whitespace tokens."""
    texts = [str(text) for text in texts]
    scores = dict(load_metric("distinct").compute(predictions=texts))
    scores.update(load_metric("self_bleu").compute(predictions=texts))
    return {key: float(scores[key]) for key in ("distinct_1", "distinct_2", "self_bleu")}
