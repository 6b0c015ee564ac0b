"""Diversity of sampled completions, reported next to the reward so mode collapse shows: distinct-1/2 and
self-BLEU over words (lowercase whitespace tokens, the same view for every model whatever its tokenizer).

distinct-n (Li et al. 2016): distinct word n-grams over all word n-grams, pooled over the texts; a text
shorter than n words adds none; 0.0 when there is no n-gram at all.

Self-BLEU (Zhu et al. 2018, Texygen): each text scored with sentence BLEU against all the others as its
references, averaged over texts (higher: more alike, less diverse; fewer than 2 texts: 0.0). Sentence BLEU
of a hypothesis of c words: m_n clipped n-gram matches (each n-gram counted at most as often as the one
reference holding it most often has it), l_n = max(c - n + 1, 0); p_1 = m_1 / l_1 unsmoothed, p_n =
(m_n + 1) / (l_n + 1) for n > 1 (BLEU+1, nltk's method2); brevity penalty 1 if c > r else exp(1 - r/c), r
the reference length closest to c (the shorter on a tie); BLEU = BP * exp(mean log p_n), 0 when c = 0 or
m_1 = 0. Written out here (no sacrebleu or nltk) in O(total n-grams): for every n-gram its largest and
second-largest count over the texts, and which text holds the largest, give each text's clip against the
others without comparing every pair."""

from __future__ import annotations

import bisect
import math
from collections import Counter


def tokenize(text: str) -> list[str]:
    return str(text).lower().split()


def distinct_n(token_lists: list[list[str]], n: int) -> float:
    """Distinct n-grams over total n-grams pooled across ``token_lists``; 0.0 when there is no n-gram."""
    seen, total = set(), 0
    for tokens in token_lists:
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def distinct(texts: list[str]) -> dict[str, float]:
    """distinct-1 and distinct-2 of ``texts``."""
    token_lists = [tokenize(text) for text in texts]
    return {"distinct_1": float(distinct_n(token_lists, 1)), "distinct_2": float(distinct_n(token_lists, 2))}


def ngram_counts(tokens: list[str], max_order: int) -> Counter:
    """Counts of every n-gram of ``tokens`` for n = 1..max_order, keyed by tuple (its length is its order)."""
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def closest_ref_length(sorted_lengths: list[int], c: int) -> int:
    """The length in ``sorted_lengths`` closest to ``c`` once one copy of ``c`` (the hypothesis itself) is
    removed; the shorter one on a tie."""
    lo, hi = bisect.bisect_left(sorted_lengths, c), bisect.bisect_right(sorted_lengths, c)
    if hi - lo >= 2:  # another text has exactly the hypothesis' length
        return c
    candidates = ([sorted_lengths[lo - 1]] if lo > 0 else []) + (
        [sorted_lengths[hi]] if hi < len(sorted_lengths) else []
    )
    return min(candidates, key=lambda r: (abs(r - c), r))


def sentence_bleu(matches: list[int], totals: list[int], c: int, r: int, max_order: int) -> float:
    """BLEU from clipped matches and n-gram totals per order (index n - 1), hypothesis length ``c`` and
    reference length ``r``: unsmoothed p_1, add-one smoothed p_n for n > 1, uniform weights,
    brevity penalty."""
    if c == 0 or matches[0] == 0:
        return 0.0
    log_precision = math.log(matches[0] / totals[0])
    for n in range(1, max_order):
        log_precision += math.log((matches[n] + 1) / (totals[n] + 1))
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(log_precision / max_order)


def self_bleu(texts: list[str], max_order: int = 4) -> float:
    """Mean BLEU of each text against all the others; 0.0 for fewer than 2 texts."""
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    token_lists = [tokenize(text) for text in texts]
    if len(token_lists) < 2:
        return 0.0
    counts = [ngram_counts(tokens, max_order) for tokens in token_lists]
    # per n-gram: [largest count, the text holding it, second-largest count]
    best: dict[tuple, list[int]] = {}
    for doc, doc_counts in enumerate(counts):
        for gram, count in doc_counts.items():
            entry = best.get(gram)
            if entry is None:
                best[gram] = [count, doc, 0]
            elif count > entry[0]:
                entry[:] = [count, doc, entry[0]]
            elif count > entry[2]:
                entry[2] = count
    sorted_lengths = sorted(len(tokens) for tokens in token_lists)
    scores = []
    for doc, (tokens, doc_counts) in enumerate(zip(token_lists, counts)):
        c, matches = len(tokens), [0] * max_order
        for gram, count in doc_counts.items():
            top, top_doc, second = best[gram]
            matches[len(gram) - 1] += min(count, second if top_doc == doc else top)
        totals = [max(c - n, 0) for n in range(max_order)]
        scores.append(sentence_bleu(matches, totals, c, closest_ref_length(sorted_lengths, c), max_order))
    return math.fsum(scores) / len(scores)


def diversity(texts: list[str]) -> dict[str, float]:
    """distinct-1, distinct-2 (higher = more diverse) and self-BLEU (higher = less diverse) of ``texts``."""
    texts = [str(text) for text in texts]
    return {**distinct(texts), "self_bleu": float(self_bleu(texts))}
