"""A task: demonstrations and prompts, split deterministically into train and held-out parts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from alignkit.config import option
from alignkit.errors import UnknownNameError, warn
from alignkit.registry import DATASETS


@dataclass
class TaskConfig:
    """Which task supplies prompts, demonstrations and the gold reward's training data."""

    dataset: str = option("imdb", "registered task dataset (see `alignkit list`)")
    max_examples: int = option(0, "use at most this many examples before splitting (0: all)", ge=0)
    heldout_fraction: float = option(0.1, "fraction of examples held out for evaluation", gt=0, lt=1)
    prompt_min_tokens: int = option(2, "shortest prompt prefix, in policy tokens", ge=1)
    prompt_max_tokens: int = option(8, "longest prompt prefix, in policy tokens", ge=1)
    split_seed: int = option(1234, "seed of the train/held-out split (independent of the run seed)", ge=0)

    def check(self):
        try:
            DATASETS.entry(self.dataset)
        except UnknownNameError as exc:
            yield "dataset", str(exc)
        if self.prompt_max_tokens < self.prompt_min_tokens:
            yield "prompt_max_tokens", f"must be >= prompt_min_tokens ({self.prompt_min_tokens})"


@dataclass
class Task:
    """Texts (demonstrations) with optional labels, split into train and held-out parts."""

    name: str
    train_texts: list[str]
    heldout_texts: list[str]
    train_labels: Optional[list[int]] = None
    heldout_labels: Optional[list[int]] = None
    # whole prompts of each split (a task made of the user's data): taken as they are, never cut to a prefix
    train_prompts: Optional[list[str]] = None
    heldout_prompts: Optional[list[str]] = None

    def prompts(self, tokenizer, split: str, n: int, cfg: TaskConfig, seed: int) -> list[str]:
        """``n`` prompts of a split: the task's own whole prompts when it has them, else the first
        ``prompt_min_tokens``-``prompt_max_tokens`` tokens (by the policy's tokenizer) of its texts, as in the
        DPO paper."""
        whole = self.train_prompts if split == "train" else self.heldout_prompts
        if whole is not None:
            return sample_prompts(whole, n, seed, split)
        texts = self.train_texts if split == "train" else self.heldout_texts
        rng = random.Random(f"{seed}-{split}")
        chosen = texts if n >= len(texts) else rng.sample(texts, n)
        lengths = [rng.randint(cfg.prompt_min_tokens, cfg.prompt_max_tokens) for _ in chosen]
        ids = tokenizer([t[:200] for t in chosen], add_special_tokens=False)["input_ids"]
        return [tokenizer.decode(row[:k]) for row, k in zip(ids, lengths)]


def sample_prompts(prompts: list[str], n: int, seed: int, split: str) -> list[str]:
    """The distinct ``prompts`` in their order, or ``n`` of them drawn with the seed when there are more;
    evaluation prompts (any split but ``train``) fewer than ``n`` are named in a one-line warning."""
    distinct = list(dict.fromkeys(prompts))
    if split != "train" and n > len(distinct):
        where = "eval.prompts holds" if split == "eval" else "the data holds out"
        warn(f"eval.n_prompts is {n}, but {where} only {len(distinct)} distinct prompt(s): evaluating on "
             f"{len(distinct)}, so every interval is that much wider")
    return distinct if n >= len(distinct) else random.Random(f"{seed}-{split}").sample(distinct, n)


def split_indices(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic shuffle, then the first ``heldout_fraction`` of it is held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = max(1, int(round(n * heldout_fraction)))
    return sorted(order[cut:]), sorted(order[:cut])
