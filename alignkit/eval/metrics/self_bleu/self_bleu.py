"""Self-BLEU (Zhu et al. 2018, Texygen): the mean BLEU of each text against all the others, a measure of
how alike a set of sampled completions are (higher = less diverse). BLEU is written out here so the
module needs neither sacrebleu nor nltk, and runs in O(total n-grams) rather than O(N^2)."""

import bisect
import math
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """\
Self-BLEU (Zhu et al. 2018, Texygen): every prediction is scored with sentence BLEU against ALL OTHER
predictions as its references, and the scores are averaged over predictions. Higher means the texts are
more alike, i.e. less diverse. Texts are tokenized by lowercasing and splitting on whitespace.

Sentence BLEU of a hypothesis h (length c words) against references R:
  * m_n: clipped n-gram matches, each n-gram of h counted at most as often as it occurs in the single
    reference holding it most often; l_n = max(c - n + 1, 0) the number of n-grams of h.
  * p_1 = m_1 / l_1 (unsmoothed); for n = 2..max_order, add-one smoothing on numerator AND denominator,
    p_n = (m_n + 1) / (l_n + 1) (Lin & Och 2004 "BLEU+1", nltk's SmoothingFunction().method2), so a short
    text with no higher-order match, or shorter than n words (p_n = 1/1), does not collapse to 0.
  * brevity penalty BP = 1 if c > r else exp(1 - r / c), r the reference length closest to c (the shorter
    one on a tie).
  * BLEU = BP * exp(sum_n log(p_n) / max_order) (uniform weights); BLEU = 0 when c = 0 or m_1 = 0.
Since p_1 is unsmoothed, predictions with vocabularies disjoint from all others score exactly 0, and N
identical non-empty predictions score exactly 1. Fewer than 2 predictions give 0.0.

Clipping against "all others" uses, for every n-gram, its largest and second-largest count over the
documents and which document holds the largest: the best count among the others of document i is the
largest unless i holds it, in which case it is the second largest. This is O(total n-grams), not O(N^2).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts, e.g. one sampled completion per prompt.
    max_order (int, optional): the largest n-gram order, 4 by default (BLEU-4).
Returns:
    self_bleu (float): mean BLEU of each prediction against all others, in [0, 1].
Examples:
    >>> self_bleu = evaluate.load("path/to/alignkit/eval/metrics/self_bleu")
    >>> self_bleu.compute(predictions=["the cat sat", "the cat sat"])
    {'self_bleu': 1.0}
"""

_CITATION = """\
@inproceedings{zhu2018texygen,
    title = {Texygen: A Benchmarking Platform for Text Generation Models},
    author = {Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and Zhang, Weinan and Wang, Jun
              and Yu, Yong},
    booktitle = {The 41st International ACM SIGIR Conference on Research & Development in Information
                 Retrieval},
    pages = {1097--1100},
    year = {2018},
}
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of ACL 2002",
    year = "2002",
    pages = "311--318",
}
"""


def tokenize(text):
    """Lowercase whitespace tokenization, as in the distinct metric."""
    return text.lower().split()


def ngram_counts(tokens, max_order):
    """Counts of every n-gram of tokens for n = 1..max_order, keyed by tuple (its length is its order)."""
    counts = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def closest_ref_length(sorted_lengths, c):
    """Length in sorted_lengths closest to c after removing one copy of c (the hypothesis itself); the
    shorter one on a tie."""
    lo = bisect.bisect_left(sorted_lengths, c)
    hi = bisect.bisect_right(sorted_lengths, c)
    if hi - lo >= 2:  # another document has exactly the hypothesis' length
        return c
    candidates = []
    if lo > 0:
        candidates.append(sorted_lengths[lo - 1])
    if hi < len(sorted_lengths):
        candidates.append(sorted_lengths[hi])
    return min(candidates, key=lambda r: (abs(r - c), r))


def sentence_bleu(matches, totals, c, r, max_order):
    """BLEU from clipped matches and n-gram totals per order (index n - 1), hypothesis length c and
    reference length r: unsmoothed p_1, add-one smoothed p_n for n > 1, uniform weights, brevity penalty."""
    if c == 0 or matches[0] == 0:
        return 0.0
    log_precision = math.log(matches[0] / totals[0])
    for n in range(1, max_order):
        log_precision += math.log((matches[n] + 1) / (totals[n] + 1))
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(log_precision / max_order)


def self_bleu(predictions, max_order=4):
    """Mean BLEU of each prediction against all the others; 0.0 for fewer than 2 predictions."""
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    token_lists = [tokenize(text) for text in predictions]
    if len(token_lists) < 2:
        return 0.0
    counts = [ngram_counts(tokens, max_order) for tokens in token_lists]
    # per n-gram: [largest count over documents, the document holding it, second-largest count]
    best = {}
    for doc, doc_counts in enumerate(counts):
        for gram, count in doc_counts.items():
            entry = best.get(gram)
            if entry is None:
                best[gram] = [count, doc, 0]
            elif count > entry[0]:
                entry[2] = entry[0]
                entry[0] = count
                entry[1] = doc
            elif count > entry[2]:
                entry[2] = count
    sorted_lengths = sorted(len(tokens) for tokens in token_lists)
    scores = []
    for doc, (tokens, doc_counts) in enumerate(zip(token_lists, counts)):
        c = len(tokens)
        matches = [0] * max_order
        for gram, count in doc_counts.items():
            top, top_doc, second = best[gram]
            matches[len(gram) - 1] += min(count, second if top_doc == doc else top)
        totals = [max(c - n, 0) for n in range(max_order)]
        scores.append(sentence_bleu(matches, totals, c, closest_ref_length(sorted_lengths, c), max_order))
    return math.fsum(scores) / len(scores)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SelfBleu(evaluate.Metric):
    """Self-BLEU of a list of texts: mean BLEU of each against all the others."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/1802.01886"],
        )

    def _compute(self, predictions, max_order=4):
        return {"self_bleu": float(self_bleu(predictions, max_order=max_order))}
