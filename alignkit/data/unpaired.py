"""trl's unpaired preference type (prompt, completion, label: what KTO is defined on), and how rows of
user data are grouped for the train/held-out split: by prompt, or by the data's own ``group`` column."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from alignkit.data import chat
from alignkit.data.checks import kind_of
from alignkit.errors import DataError


def split_groups(group: list[int], heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices of the train and held-out groups: a seeded shuffle of the groups, the first
    ``heldout_fraction`` of them held out (at least one; none at 0)."""
    groups = sorted(set(group))
    random.Random(seed).shuffle(groups)
    held = set(groups[: max(1, int(len(groups) * heldout_fraction))] if heldout_fraction > 0 else [])
    return [i for i, g in enumerate(group) if g not in held], [i for i, g in enumerate(group) if g in held]


@dataclass
class UnpairedData:
    """trl's unpaired preference type: a prompt, one completion and whether it is desirable (``label``), as
    KTO is defined on; ``group`` as for pairs (the prompt, or the data's own ``group`` column)."""

    prompts: list[str]
    completions: list[str]
    desirable: list[bool]
    group: list[int]
    conversational: bool = False
    unpaired = True  # what paired-only consumers check

    def __len__(self) -> int:
        return len(self.prompts)

    def eos_flags(self, index, append_eos: bool) -> list[bool]:
        """Whether to append EOS to each completion of ``index`` (never after a chat template's turn end)."""
        return [append_eos and not self.conversational] * len(index)

    def split(self, heldout_fraction: float, seed: int) -> tuple["UnpairedData", "UnpairedData"]:
        train, held = split_groups(self.group, heldout_fraction, seed)
        return self.subset(train), self.subset(held)

    def subset(self, index: list[int]) -> "UnpairedData":
        pick = lambda seq: [seq[i] for i in index]  # noqa: E731
        return UnpairedData(pick(self.prompts), pick(self.completions), pick(self.desirable),
                            pick(self.group),
                            self.conversational)


def is_unpaired(row) -> bool:
    """Whether a row is in trl's unpaired preference format (prompt, completion, label;
    no chosen/rejected)."""
    return isinstance(row, dict) and "completion" in row and "label" in row and "chosen" not in row


def prompt_groups(rows: list[dict], origin: str) -> list[int]:
    """Each row's split unit: the value of its ``group`` column when the data has one, else its prompt, so
    that every row of one prompt lands on one side of the train/held-out split. A prompt in two groups is an
    error (it would be trained on and held out). Integer groups are kept; other values are numbered."""
    has_group = "group" in rows[0]
    for i, row in enumerate(rows):
        value = row.get("group")
        if has_group and (isinstance(value, bool) or not isinstance(value, (int, str))):
            raise DataError(f"{origin}: row {i}: column 'group' must be an integer or text naming the row's "
                            "group, "
                            f"got {kind_of(value)}")
    key = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731
    ids: dict[str, int] = {}
    groups = [ids.setdefault(key(row.get("group") if has_group else row.get("prompt")),
                             len(ids)) for row in rows]
    if has_group and all(isinstance(row.get("group"), int) and not isinstance(row.get("group"),
                                                                              bool) for row in rows):
        groups = [row["group"] for row in rows]  # integer groups are kept as they are
    if has_group:
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            j = first.setdefault(key(row.get("prompt")), i)
            if groups[j] != groups[i]:
                raise DataError(f"{origin}: rows {j} and {i} have the same prompt but different groups "
                                f"({rows[j].get('group')!r}, {row.get('group')!r}); every row of one prompt "
                                "must be "
                                f"in one group, so that no prompt is both trained on and held out")
    return groups


def read_unpaired(rows: list[dict], origin: str, tokenizer, max_rows: int = 0) -> UnpairedData:
    """Unpaired rows (prompt, completion, label), checked and (conversational ones) rendered like pairs
    (without ``tokenizer`` conversational rows are checked and left as stand-ins, see chat.render_rows)."""
    conversational = any(isinstance(rows[0].get(c), list) for c in ("prompt", "completion"))
    if conversational:  # a completion renders like a pair's chosen reply
        shaped = [{"chosen": r.get("completion"), "rejected": r.get("completion"),
                   **({"prompt": r["prompt"]} if "prompt" in r else {})} for r in rows]
        chat.conversational_rows(shaped, origin)
        rendered = chat.render_rows(shaped, origin, tokenizer)
        rows = [{**r, "prompt": x["prompt"], "completion": x["chosen"]} for r, x in zip(rows, rendered)]
    labels = []
    for i, row in enumerate(rows):
        for column in ("prompt", "completion"):
            if not isinstance(row.get(column), str):
                raise DataError(f"{origin}: row {i}: column {column!r} must be text, got "
                                f"{kind_of(row.get(column))}"
                                if column in row else f"{origin}: row {i}: missing column {column!r}")
            if not row[column].strip():
                raise DataError(f"{origin}: row {i}: column {column!r} is empty")
        label = row.get("label")
        label = label.strip().lower() if isinstance(label, str) else label
        if label not in (True, False, 1, 0, "true", "false", "1", "0"):
            raise DataError(f"{origin}: row {i}: column 'label' must be true (desirable) or false "
                            "(undesirable), "
                            f"got {kind_of(row.get('label'))}")
        labels.append(label in (True, 1, "true", "1"))
    data = UnpairedData([r["prompt"] for r in rows], [r["completion"] for r in rows], labels,
                        prompt_groups(rows, origin), conversational)
    return data.subset(list(range(min(len(data), max_rows)))) if max_rows else data
