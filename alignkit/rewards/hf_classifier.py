"""``hf-classifier``: any transformers sequence classifier (a Hub id or a local folder) as the gold reward.

The reward of a completion is the log-odds of one label of the classifier on prompt + completion (the same
text ``imdb-sentiment`` scores): ``log p / (1 - p)`` = ``logit[label] - logsumexp(other logits)``, which for
a two-label model is simply ``logit[label] - logit[other]``. A one-output (regression) head's score is its
logit. Settings come from the recipe's ``gold_reward_options`` (validated at load by
:class:`HFClassifierOptions`).
The DPO paper's IMDb ground truth is ``siebert/sentiment-roberta-large-english`` (``recipes/paper/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from alignkit.config import build, fingerprint, option, to_dict
from alignkit.errors import AlignkitError
from alignkit.models.config import looks_like_local_path
from alignkit.registry import register_reward
from alignkit.stages.workspace import RecordedReward, Workspace

KEY = "gold_reward_options"
DEFAULT_LABEL = "positive"  # matched without regard to case: POSITIVE, Positive, positive
_SANE_LENGTH = 100_000  # tokenizers without a known limit report a huge model_max_length


@dataclass
class HFClassifierOptions:
    """Settings of the ``hf-classifier`` gold reward (the recipe's ``gold_reward_options``)."""

    model: str = option(help="Hub id or local folder of a sequence classifier "
                             "(AutoModelForSequenceClassification)")
    revision: Optional[str] = option(None, "Hub revision (branch, tag or commit) of the classifier")
    label: Optional[str] = option(None, "label whose log-odds is the reward, by name from the model's "
                                        "config.id2label, any case (default: positive)")
    batch_size: int = option(32, "texts per forward pass", ge=1)
    max_length: Optional[int] = option(None, "truncate texts to this many tokens (default: the tokenizer's "
                                             "model_max_length, else the position embeddings)", ge=2)

    def check(self):
        """Cheap offline checks at recipe load: a local folder exists and, when its config.json is there, has
        the
        label. A Hub id is checked when it is downloaded, at the first scoring."""
        path = Path(self.model).expanduser()
        if not path.exists():
            if looks_like_local_path(self.model):
                yield "model", f"cannot load {self.model!r} as a local folder: it does not exist"
            return
        config = path / "config.json"
        if not path.is_dir() or not config.is_file():
            yield "model", f"{self.model!r} is not a model folder (no config.json in it)"
            return
        try:
            labels = {int(i): name for i,
                      name in (json.loads(config.read_text()).get("id2label") or {}).items()}
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            yield "model", f"{self.model}/config.json: cannot read its id2label: {str(exc).splitlines()[0]}"
            return
        problem = label_problem(self.label, labels)
        if problem:
            yield "label", problem


def label_problem(label: Optional[str], id2label: dict[int, str]) -> Optional[str]:
    """Why ``label`` names no output of a classifier with these labels (None when it does)."""
    try:
        label_index(label, id2label)
    except LookupError as exc:
        return str(exc.args[0])
    return None


def label_index(label: Optional[str], id2label: dict[int, str]) -> Optional[int]:
    """The output index of ``label`` (any case; None: ``positive``), or None for a one-output model
    left at the default label. Raises LookupError naming the model's labels."""
    if len(id2label) <= 1 and label is None:
        return None
    wanted = (label or DEFAULT_LABEL).lower()
    found = [i for i, name in id2label.items() if str(name).lower() == wanted]
    if len(found) != 1:
        names = ", ".join(str(id2label[i]) for i in sorted(id2label)) or "none"
        why = "more than one" if found else "no"
        raise LookupError(f"the classifier has {why} label {label or DEFAULT_LABEL!r} (its labels: {names}); "
                          f"set {KEY}.label to one of them")
    return found[0]


def log_odds(logits: torch.Tensor, index: Optional[int]) -> torch.Tensor:
    """Per row, ``log p / (1 - p)`` of output ``index`` under the softmax of ``logits`` [N, C]; the logit
    itself for a one-output head."""
    if index is None or logits.shape[1] == 1:
        return logits[:, 0]
    others = torch.cat([logits[:, :index], logits[:, index + 1:]], dim=1)
    return logits[:, index] - torch.logsumexp(others, dim=1)


class HFClassifier:
    """A loaded sequence classifier scoring texts in batches, without gradients, on one device."""

    def __init__(self, options: HFClassifierOptions, device: torch.device):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.options = options
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(options.model, revision=options.revision)
            model = AutoModelForSequenceClassification.from_pretrained(options.model,
                                                                       revision=options.revision)
        except (OSError, ValueError) as exc:
            where = "local folder" if Path(options.model).expanduser().exists() else \
                "Hub id (no Hub access, or no such model?)"
            raise AlignkitError(f"{KEY}.model: cannot load {options.model!r} as a {where}: "
                                f"{str(exc).strip().splitlines()[0]}") from exc
        self.model = model.to(device).eval()
        config = self.model.config
        try:
            self.index = label_index(options.label, {int(i): n for i, n in (config.id2label or {}).items()})
        except LookupError as exc:
            raise AlignkitError(f"{KEY}.label: {options.model}: {exc.args[0]}") from None
        if self.tokenizer.pad_token is None:  # GPT-style classifiers: pad with EOS so batches can be padded
            if self.tokenizer.eos_token is None:
                raise AlignkitError(f"{KEY}.model: {options.model!r} has neither a padding nor an EOS token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = options.max_length or self._model_limit()

    def _model_limit(self) -> int:
        """The longest input the classifier takes: its tokenizer's limit, else its position embeddings."""
        limit = self.tokenizer.model_max_length
        if limit and limit < _SANE_LENGTH:
            return int(limit)
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions",
                                                                               None) or 512)

    @torch.inference_mode()
    def score(self, texts: list[str]) -> np.ndarray:
        """Log-odds of the chosen label for each text, float64 [N]."""
        scores = []
        for start in range(0, len(texts), self.options.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.options.batch_size]), padding=True,
                                   truncation=True, max_length=self.max_length, return_tensors="pt")
            logits = self.model(**batch.to(self.model.device)).logits.float()
            scores.append(log_odds(logits, self.index).double().cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float64)

    @property
    def meta(self) -> dict:
        """What the manifest records about the judge: which model, revision and label, how texts are cut."""
        config = self.model.config
        labels = config.id2label or {}
        return {"reward": "hf-classifier", "model": self.options.model,
                "revision": self.options.revision or getattr(config, "_commit_hash", None),
                "label": None if self.index is None else labels.get(self.index),
                "num_labels": config.num_labels,
                "max_length": self.max_length, "score": "log-odds of the label on prompt + completion"}


@register_reward("hf-classifier", options=HFClassifierOptions)
def hf_classifier(workspace: Workspace):
    """Gold log-odds of one label of any transformers sequence classifier, on prompt + completion."""
    options = build(HFClassifierOptions, workspace.recipe.gold_reward_options, where=KEY)
    classifier = HFClassifier(options, workspace.device)

    def score(prompts: list[str], completions: list[str]) -> np.ndarray:
        return classifier.score([p + c for p, c in zip(prompts, completions)])

    return RecordedReward(score, fingerprint(to_dict(options)), classifier.meta)
