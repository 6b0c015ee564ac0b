"""The sample browser's data: every entry's completions at the primary temperature, aligned by prompt, with
the reference's completion once per prompt. Columns, not rows (one list per field and entry), so 26 entries
x 256 prompts stays a few megabytes of JSON. Nothing here samples or scores: it reads
``eval/samples.jsonl``."""

from __future__ import annotations

import math

from alignkit.report.records import RunRecord

# a samples.jsonl key -> its short name in the page's data (None where an entry's rows lack it)
ENTRY_FIELDS = {"completion": "text", "gold_reward": "gold", "proxy_reward": "proxy", "kl": "kl",
                "judge_score": "judge", "judge_preference": "pref", "ended": "ended"}
REFERENCE_FIELDS = {"reference_completion": "text", "reference_gold_reward": "gold",
                    "reference_judge_score": "judge"}


def _rounded(value):
    """Scores to 4 significant digits (the page shows 3; the JSON is a third smaller); NaN as null."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    return value


def _columns(rows: list[dict], fields: dict[str, str]) -> dict[str, list]:
    """One list per field that at least one row has (a missing value is null)."""
    return {short: [_rounded(r.get(key)) for r in rows] for key, short in fields.items()
            if any(r.get(key) is not None for r in rows)}


class _PromptIndex:
    """Prompts in order of first appearance; a prompt repeated in one entry's samples is a distinct row."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._at: dict[tuple[str, int], int] = {}

    def positions(self, prompts: list[str]) -> list[int]:
        seen: dict[str, int] = {}
        out = []
        for prompt in prompts:
            key = (prompt, seen.get(prompt, 0))
            seen[prompt] = key[1] + 1
            if key not in self._at:
                self._at[key] = len(self.prompts)
                self.prompts.append(prompt)
            out.append(self._at[key])
        return out


def sample_data(runs: list[RunRecord]) -> dict:
    """``prompts``; ``reference``: its columns by prompt; ``entries``: by label, each policy's columns and
    ``at``, the prompt of each of its rows. An entry whose reference completions differ from the first one's
    (runs sampled apart) carries its own ``reference``."""
    index, reference, entries = _PromptIndex(), {}, {}
    for run in runs:
        if not run.is_policy:
            continue
        rows = run.samples()
        at = index.positions([r["prompt"] for r in rows])
        entry = {"at": at, **_columns(rows, ENTRY_FIELDS)}
        if any(i in reference and reference[i].get("reference_completion") != r.get("reference_completion")
               for i, r in zip(at, rows)):
            entry["reference"] = _columns(rows, REFERENCE_FIELDS)
        else:
            for i, r in zip(at, rows):
                reference.setdefault(i, r)
        entries[run.label] = entry
    shared = [reference.get(i, {}) for i in range(len(index.prompts))]
    return {"prompts": index.prompts, "reference": _columns(shared, REFERENCE_FIELDS), "entries": entries}
