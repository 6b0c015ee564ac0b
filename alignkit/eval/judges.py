"""The judge seam. A judge decides win rates; it is either a **score judge**, a registered reward
``(prompts, completions[, ended]) -> scores`` (the gold reward, a reward model, a classifier), or a
**pairwise judge**, a :class:`PairwiseJudge` whose ``compare(prompts, a, b)`` returns, per prompt, 1 when
``a`` is better, 0 when ``b`` is, 0.5 for a tie. The evaluator asks a pairwise judge directly for the
policy's completion against the reference's; a score judge's scores are compared as before.

A pairwise judge is asked every question in both orders (``a`` shown first, then ``b`` first): a verdict
that changes with the order (position bias) is a tie, and so is an answer that names neither response;
both are counted. Verdicts are cached on disk, keyed by (judge, prompt, first response, second response),
as JSON lines (no pickle). Any judge's agreement with held-out human preference pairs is measured the same
way (:func:`judge_agreement`): the fraction of pairs where it prefers the chosen completion, ties half; of
unpaired rows (KTO's data), every desirable completion of a prompt is paired with every undesirable one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from alignkit.data.preferences import PreferenceData, as_pairs
from alignkit.data.unpaired import UnpairedData
from alignkit.errors import AlignkitError

DEFAULT_TEMPLATE = ("Which response to the prompt is better? Answer with a single letter, A or B.\n\n"
                    "Prompt: {prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\nThe better response is")
TEMPLATE_FIELDS = ("{prompt}", "{a}", "{b}")

_NOISE = re.compile(r"[*_`#\"'~]")
_WHOLE = re.compile(
    r"^\W*(?:(?:response|answer|output|option|assistant|choice)\s*:?\s*)?[(\[]*([ab])[)\]]*\W*$"
)
_BRACKETED = re.compile(r"\[\[\s*([ab])\s*\]\]")
_NAMED = re.compile(r"\b(?:response|answer|output|option|assistant|choice)\s*:?\s*[(\[]?([ab])\b")
_STATED = re.compile(r"\b(?:better(?: one)?(?: response)? "
                     r"is|prefer|verdict\s*:?|winner\s*:?|choose|choice\s*:)\s*[(\[]?([ab])\b")
_LEADING = re.compile(r"^\W*([ab])(?:$|[.,:;)\]!])")
_TIE = re.compile(r"^\W*(?:tie|equal|neither|both|same)\b")


def parse_verdict(text: str) -> Optional[str]:
    """``"A"``, ``"B"``, ``"tie"`` or None (unparseable) from a judge's answer: ``A``, ``Response B``,
    ``**A**``, ``[[b]]``, ``The better response is A.``, ``b) because ...`` (a lone leading ``a`` is an
    article, not a verdict); an answer naming both
    responses without a stated choice is None."""
    text = _NOISE.sub("", text or "").strip().lower()
    if not text:
        return None
    if _TIE.match(text):
        return "tie"
    for pattern in (_WHOLE, _BRACKETED):
        found = pattern.search(text)
        if found:
            return found.group(1).upper()
    for pattern in (_STATED, _NAMED):
        letters = set(pattern.findall(text))
        if len(letters) == 1:
            return letters.pop().upper()
        if letters:
            return None
    found = _LEADING.match(text)
    return found.group(1).upper() if found else None


def quoted_reply(answer: Optional[str], a: str, b: str) -> Optional[str]:
    """``"A"`` or ``"B"`` when the answer is one reply's text word for word (a small judge that names the
    better reply by repeating it, as SmolLM2-135M does), else None."""
    words = _NOISE.sub("", answer or "").strip().lower().rstrip(".!").split()
    found = [letter for letter, reply in (("A", a), ("B", b)) if words == reply.lower().rstrip(".!").split()]
    return found[0] if len(found) == 1 else None


def read_verdict(answer: Optional[str], question: tuple[str, str, str]) -> Optional[str]:
    """The verdict of an answer to ``(prompt, first, second)``: a stated A, B or tie, else the reply it
    repeats word for word; None when it gives neither."""
    return parse_verdict(answer or "") or quoted_reply(answer, *question[1:])


ANSWER_CHARS = 4096  # of a judge's answer kept in the verdict cache (its verdict is parsed from all of it)
MAX_UNPARSEABLE = 0.25  # default share of unparseable answers above which a judge fails
PROBE = ("What is two plus two?", "Two plus two is four.", "Two plus two is five.")  # asked once, at load
VERDICTS = ("A", "B", "tie")


class JudgeError(AlignkitError):
    """A judge that cannot be used (does not load, cannot fit a question, answers unparseably): one line."""


class VerdictCache:
    """A judge's verdicts on disk, ``<cache>/judge_verdicts/<judge key>.jsonl``, one JSON object per
    question ``{"key", "verdict", "answer"}`` (the answer cut to ``ANSWER_CHARS``); appended under a lock,
    read once per judge. Only parseable answers are kept (an unparseable one is asked again: a broken
    endpoint's never sticks); a row that is not such an object (torn, oversized, foreign) is skipped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.verdicts: dict[str, str] = {}
        if self.path.is_file():
            with open(self.path, errors="replace") as handle:
                for line in handle:
                    found = self._row(line)
                    if found:
                        self.verdicts[found[0]] = found[1]
        self.hits = 0

    @staticmethod
    def _row(line: str) -> tuple[str, str] | None:
        if len(line) > 2 * ANSWER_CHARS + 512:
            return None
        try:
            row = json.loads(line)
            key, answer = row["key"], row["answer"]
        except (ValueError, KeyError, TypeError):
            return None
        if not (isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key) and isinstance(answer, str)):
            return None
        verdict = row["verdict"] if "verdict" in row else parse_verdict(answer)  # rows from before verdicts
        return (key, verdict) if verdict in VERDICTS and len(answer) <= ANSWER_CHARS else None

    @staticmethod
    def key(judge: str, prompt: str, first: str, second: str) -> str:
        return hashlib.sha256(json.dumps([judge, prompt, first, second]).encode()).hexdigest()

    def add(self, answers: dict[str, tuple[Optional[str], str]]) -> None:
        """Record the answers that gave a verdict (``key: (verdict, answer)``): the verdict, and at most
        ``ANSWER_CHARS`` of the text."""
        rows = {k: (v, a[:ANSWER_CHARS]) for k, (v, a) in answers.items() if v is not None}
        if not rows:
            return
        self.verdicts.update({k: verdict for k, (verdict, _) in rows.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write("".join(json.dumps({"key": k, "verdict": v, "answer": a}) + "\n"
                                 for k, (v, a) in rows.items()))
            fcntl.flock(handle, fcntl.LOCK_UN)


class PairwiseJudge:
    """Says which of two responses to a prompt is better. Subclasses implement :meth:`ask` (one answer
    text per question ``(prompt, first, second)``, None where no answer came back); ``identity`` names what
    decides the answers (model, template...), the key of the verdict cache. More than ``max_unparseable`` of
    the answers to one :meth:`compare` unparseable: the judge fails (:class:`JudgeError`)."""

    kind = "pairwise"
    max_unparseable = MAX_UNPARSEABLE
    problem: Optional[str] = None  # why the last missing answer is missing, for messages
    setting = "eval.judge_options"  # where its settings are, for messages

    def __init__(self, name: str, identity: str, template: str = DEFAULT_TEMPLATE,
                 cache_dir: Path | None = None):
        self.name, self.identity, self.template = name, identity, template
        self.cache = (
            VerdictCache(Path(cache_dir) / "judge_verdicts" / f"{identity}.jsonl") if cache_dir else None
        )
        self.stats = {"questions": 0, "asked": 0, "cached": 0, "unparseable": 0, "order_disagreements": 0}
        # the policy's chat markup off (set by the run)
        self.readable: Callable[[str], str] = lambda text: text

    def render(self, prompt: str, first: str, second: str) -> str:
        return self.template.replace("{prompt}", prompt).replace("{a}", first).replace("{b}", second)

    def ask(self, questions: list[tuple[str, str, str]]) -> list[Optional[str]]:
        raise NotImplementedError

    def _shown(self, answer: Optional[str]) -> str:
        if answer is None:
            return f"no answer: {self.problem}" if self.problem else "no answer"
        return repr(answer[:60] + ("..." if len(answer) > 60 else ""))

    def fits(self, questions: list[tuple[str, str, str]]) -> None:
        """Raise :class:`JudgeError` when a question is too long for the judge (a local model's context)."""

    def check(self, questions: list[tuple[str, str, str]]) -> None:
        """Before anything trains: the judge loads, fits ``questions`` (the longest it will be asked) and
        answers a probe question parseably; else one line saying what to change."""
        self.fits(questions)
        answer = self.ask([PROBE])[0]
        if read_verdict(answer, PROBE) is None:
            raise JudgeError(f"{self.name}: its answer to a probe question cannot be parsed as A, B or a tie "
                             f"({self._shown(answer)}); choose a judge that answers the question with A or B "
                             f"({self.setting}: its model, template or endpoint)")

    def verdicts(self, questions: list[tuple[str, str, str]]) -> list[Optional[str]]:
        """The verdict on every question ("A", "B", "tie", None: unparseable), from the cache where asked
        before; an answer that never came back is not cached."""
        keys = [VerdictCache.key(self.identity, *q) for q in questions]
        known = self.cache.verdicts if self.cache else {}
        todo = list(dict.fromkeys(k for k in keys if k not in known))
        where = {k: q for k, q in zip(keys, questions)}
        answers = dict(zip(todo, self.ask([where[k] for k in todo]))) if todo else {}
        fresh = {k: read_verdict(a, where[k]) for k, a in answers.items()}
        if self.cache:
            self.cache.add({k: (fresh[k], a) for k, a in answers.items() if a is not None})
            self.cache.hits += len(keys) - len(todo)
        self.stats.update(questions=self.stats["questions"] + len(keys),
                          asked=self.stats["asked"] + len(todo),
                          cached=self.stats["cached"] + len(keys) - len(todo))
        found = [fresh[k] if k in fresh else known[k] for k in keys]
        examples = [answers.get(k) for k, v in zip(keys, found) if v is None and k in fresh]
        self._refuse_unparseable(found, examples)
        return found

    def _refuse_unparseable(self, verdicts: list[Optional[str]], examples: list[Optional[str]]) -> None:
        bad = sum(v is None for v in verdicts)
        if verdicts and bad / len(verdicts) > self.max_unparseable:
            example = f"; e.g. {self._shown(examples[0])}" if examples else ""
            raise JudgeError(f"{self.name}: {bad} of {len(verdicts)} answers cannot be parsed as A, B or a "
                             f"tie (more than max_unparseable {self.max_unparseable:g}){example}; fix the "
                             f"judge ({self.setting}) or raise {self.setting}.max_unparseable; no result was "
                             f"recorded")

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> np.ndarray:
        """Per prompt: 1 when ``a`` is better, 0 when ``b`` is, 0.5 when the two orders disagree, either
        answer is a tie, or either cannot be parsed."""
        n = len(prompts)
        if not (len(a) == len(b) == n):
            raise ValueError(f"compare needs as many completions as prompts ({n}), got {len(a)} and {len(b)}")
        prompts, a, b = ([self.readable(t) for t in texts] for texts in (prompts, a, b))
        verdicts = self.verdicts([*zip(prompts, a, b), *zip(prompts, b, a)])
        out = np.full(n, 0.5)
        for i, (forward, backward) in enumerate(zip(verdicts[:n], verdicts[n:])):
            if forward is None or backward is None:
                self.stats["unparseable"] += (forward is None) + (backward is None)
            elif forward == "A" and backward == "B":
                out[i] = 1.0
            elif forward == "B" and backward == "A":
                out[i] = 0.0
            elif "tie" not in (forward, backward):
                self.stats["order_disagreements"] += 1
        return out


def is_pairwise(judge) -> bool:
    return isinstance(judge, PairwiseJudge)


def labelled_pairs(data: PreferenceData | UnpairedData, append_eos: bool) -> tuple[list, list, list, list,
                                                                                   list]:
    """(prompts, chosen, rejected, chosen_ended, rejected_ended) of held-out human judgements: the pairs, or
    of
    unpaired rows each desirable completion against each undesirable one of the same prompt."""
    data = as_pairs(data)
    chosen_ended, rejected_ended = data.eos_flags(list(range(len(data))), append_eos)
    return (list(data.prompts), list(data.chosen), list(data.rejected), list(chosen_ended),
            list(rejected_ended))


def judge_agreement(judge, pairs: PreferenceData | UnpairedData, append_eos: bool,
                    score: Callable[..., np.ndarray],
                    limit: int = 0) -> dict:
    """How often ``judge`` prefers the chosen completion of held-out human preference pairs (ties count one
    half), on the first ``limit`` pairs (0: all). ``score``: how a score judge is called
    (:func:`~alignkit.eval.evaluator.score_texts`); a pairwise judge is asked both orders."""
    prompts, chosen, rejected, chosen_ended, rejected_ended = labelled_pairs(pairs, append_eos)
    total = len(prompts)
    n = total if not limit else min(limit, total)
    if not n:
        return {"agreement": None, "n_pairs": 0}
    prompts, chosen, rejected = prompts[:n], chosen[:n], rejected[:n]
    if is_pairwise(judge):
        before = dict(judge.stats)
        prefs = judge.compare(prompts, chosen, rejected)
        extra = {k: judge.stats[k] - before[k] for k in ("unparseable", "order_disagreements")}
    else:
        chosen_scores = score(judge, prompts, chosen, chosen_ended[:n])
        rejected_scores = score(judge, prompts, rejected, rejected_ended[:n])
        prefs = (chosen_scores > rejected_scores) + 0.5 * (chosen_scores == rejected_scores)
        extra = {}
    return {"agreement": float(np.mean(prefs)), "n_pairs": n, "of_heldout_pairs": total,
            "ties": int(np.sum(prefs == 0.5)), **extra}
