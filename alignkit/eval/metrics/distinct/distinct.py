"""distinct-n (Li et al. 2016): the share of distinct word n-grams among all word n-grams a set of texts
holds, a cheap measure of how varied sampled completions are (low values flag mode collapse)."""

import datasets
import evaluate

_DESCRIPTION = """\
distinct-1 and distinct-2 (Li et al. 2016): the number of distinct word n-grams divided by the total number
of word n-grams, pooled over all predictions, for n = 1 and n = 2. Texts are tokenized by lowercasing and
splitting on whitespace (str.lower().split()); a text shorter than n words contributes no n-gram. When
there is no n-gram at all (empty input, or every text too short) the score is 0.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts, e.g. one sampled completion per prompt.
Returns:
    distinct_1 (float): distinct unigrams / total unigrams, in [0, 1].
    distinct_2 (float): distinct bigrams / total bigrams, in [0, 1].
Examples:
    >>> distinct = evaluate.load("path/to/alignkit/eval/metrics/distinct")
    >>> distinct.compute(predictions=["a b a", "b c"])
    {'distinct_1': 0.6, 'distinct_2': 1.0}
"""

_CITATION = """\
@inproceedings{li-etal-2016-diversity,
    title = "A Diversity-Promoting Objective Function for Neural Conversation Models",
    author = "Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill",
    booktitle = "Proceedings of NAACL-HLT 2016",
    year = "2016",
    pages = "110--119",
}
"""


def tokenize(text):
    """Lowercase whitespace tokenization: the same word-level view for every model, whatever its tokenizer."""
    return text.lower().split()


def distinct_n(token_lists, n):
    """Distinct n-grams over total n-grams pooled across token_lists; 0.0 when there is no n-gram."""
    seen = set()
    total = 0
    for tokens in token_lists:
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Distinct(evaluate.Metric):
    """distinct-1 and distinct-2 of a list of texts."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://aclanthology.org/N16-1014/"],
        )

    def _compute(self, predictions):
        token_lists = [tokenize(text) for text in predictions]
        return {"distinct_1": float(distinct_n(token_lists, 1)), "distinct_2": float(distinct_n(token_lists, 2))}
