"""The diversity metrics: distinct-n and self-BLEU (plain functions of alignkit.eval.diversity), checked
against hand computations and a naive O(N^2) self-BLEU, with no `evaluate` and no network."""

from __future__ import annotations

import math
import random
import socket
import sys
from collections import Counter

import pytest

from alignkit.eval import diversity as div
from alignkit.eval.diversity import distinct, self_bleu


def naive_self_bleu(texts, max_order=4):
    """Self-BLEU the slow, obvious way: each text against the explicit list of all the others."""
    tokens = [t.lower().split() for t in texts]
    if len(tokens) < 2:
        return 0.0
    scores = []
    for i, hyp in enumerate(tokens):
        refs = tokens[:i] + tokens[i + 1:]
        c = len(hyp)
        if c == 0:
            scores.append(0.0)
            continue
        r = min((len(ref) for ref in refs), key=lambda length: (abs(length - c), length))
        precisions = []
        for n in range(1, max_order + 1):
            hyp_grams = Counter(tuple(hyp[k:k + n]) for k in range(len(hyp) - n + 1))
            ref_grams = [Counter(tuple(ref[k:k + n]) for k in range(len(ref) - n + 1)) for ref in refs]
            matched = sum(min(count, max(rg[g] for rg in ref_grams)) for g, count in hyp_grams.items())
            total = sum(hyp_grams.values())
            precisions.append(matched / total if n == 1 else (matched + 1) / (total + 1))
        if precisions[0] == 0:
            scores.append(0.0)
            continue
        bp = 1.0 if c > r else math.exp(1 - r / c)
        scores.append(bp * math.prod(precisions) ** (1 / max_order))
    return sum(scores) / len(scores)


def test_distinct_hand_computed():
    # unigrams a b a b c: 3 distinct of 5; bigrams (a b) (b a) (b c): 3 of 3
    assert distinct(["a b a", "b c"]) == {"distinct_1": 3 / 5, "distinct_2": 1.0}
    # lowercased: The/the are one word; bigrams (the cat) (cat the) (the cat) (cat): 2 of 3, "cat" adds none
    out = distinct(["The cat the CAT", "cat"])
    assert out == pytest.approx({"distinct_1": 2 / 5, "distinct_2": 2 / 3}, abs=1e-15)
    assert distinct([]) == {"distinct_1": 0.0, "distinct_2": 0.0}
    assert distinct(["", "  "]) == {"distinct_1": 0.0, "distinct_2": 0.0}
    assert distinct(["a", "a"]) == {"distinct_1": 0.5, "distinct_2": 0.0}


def test_self_bleu_extremes():
    assert self_bleu(["the cat sat on the mat"] * 5) == 1.0
    assert self_bleu(["a b c d", "e f g h", "i j"]) == 0.0  # p_1 = 0
    assert self_bleu([]) == 0.0
    assert self_bleu(["only one text"]) == 0.0


def test_self_bleu_hand_computed():
    texts = ["the cat sat", "the cat ran", "a dog ran"]
    # "the cat sat": p1 2/3, p2 (1+1)/(2+1), p3 (0+1)/(1+1), p4 (0+1)/(0+1); BP 1 (ref lengths 3)
    # "the cat ran": p1 3/3, p2 2/3, p3 1/2, p4 1;  "a dog ran": p1 1/3, p2 (0+1)/(2+1), p3 1/2, p4 1
    expected = ((2 / 9) ** 0.25 + (1 / 3) ** 0.25 + (1 / 18) ** 0.25) / 3
    assert self_bleu(texts) == pytest.approx(expected, abs=1e-15)
    # unigram BLEU with clipping: "a" is most frequent in doc 2 (3), second in doc 0 (2), so doc 2 clips at 2;
    # "a c" has length 2 against 3 and 3: BP exp(1 - 3/2)
    out = self_bleu(["a a b", "a c", "a a a"], max_order=1)
    assert out == pytest.approx((2 / 3 + 0.5 * math.exp(-0.5) + 2 / 3) / 3, abs=1e-15)
    # closest reference length, ties to the shorter: "x y z" (3) against 2 and 4 takes r=2, BP 1;
    # "x y" (2) against 3 and 4 takes r=3; "x y z w" (4) against 3 and 2 takes r=3, BP 1
    out = self_bleu(["x y z", "x y", "x y z w"], max_order=1)
    assert out == pytest.approx((1 + math.exp(1 - 3 / 2) + 3 / 4) / 3, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_self_bleu_matches_naive(seed):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e", "f", "G", "h"]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(30)]
    texts += [texts[3], texts[7], texts[7]]  # duplicates: ties for the largest count
    for max_order in (1, 2, 3, 4):
        fast = self_bleu(texts, max_order=max_order)
        assert fast == pytest.approx(naive_self_bleu(texts, max_order), abs=1e-12)
        assert 0.0 < fast < 1.0


def test_diversity_needs_neither_evaluate_nor_the_network(monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "evaluate", None)  # importing it now raises ImportError
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("tried to reach the network"))
    texts = ["the cat sat", "the cat ran", "a dog ran"]
    capfd.readouterr()
    out = div.diversity(texts)
    assert out == pytest.approx({"distinct_1": 6 / 9, "distinct_2": 5 / 6,
                                 "self_bleu": naive_self_bleu(texts)},
                                abs=1e-12)
    assert capfd.readouterr() == ("", "")  # no warnings or progress bars
    assert div.diversity(["same words here"] * 3) == {"distinct_1": 1 / 3, "distinct_2": 2 / 6,
                                                      "self_bleu": 1.0}
    assert div.diversity([]) == {"distinct_1": 0.0, "distinct_2": 0.0, "self_bleu": 0.0}
