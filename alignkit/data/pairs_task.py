"""The task made of the user's own preference data (``task.dataset: preferences``): rollouts (PPO, GRPO,
RLOO, Best-of-N) draw from the prompts of the training pairs, evaluation samples the prompts of the held-out
pairs (or ``eval.prompts``), each prompt whole and exactly as training saw it (conversational data rendered
with the policy's chat template). The split is the pairs' own, by prompt group, so the two sides share no
prompt. Its demonstrations (for SFT and PPO-ptx) are each prompt followed by a preferred completion."""

from __future__ import annotations

from pathlib import Path

from alignkit.data import chat
from alignkit.data.preferences import PreferenceData
from alignkit.data.sources import read_rows
from alignkit.data.task import Task, TaskConfig
from alignkit.data.unpaired import UnpairedData
from alignkit.errors import DataError
from alignkit.registry import register_dataset

NAME = "preferences"


def demonstrations(data: PreferenceData | UnpairedData) -> list[str]:
    """Prompt + preferred completion: a pair's chosen one, an unpaired row's when it is desirable."""
    if isinstance(data, UnpairedData):
        return [p + c for p, c, good in zip(data.prompts, data.completions, data.desirable) if good]
    return [p + c for p, c in zip(data.prompts, data.chosen)]


@register_dataset(NAME, from_pairs=True)
def preferences_task(cfg: TaskConfig, train: PreferenceData | UnpairedData | None = None,
                     heldout: PreferenceData | UnpairedData | None = None) -> Task:
    """Prompts and demonstrations from the preference data's train/held-out split (a Workspace passes it)."""
    if train is None or heldout is None:
        raise DataError("task.dataset preferences is built from the preference data's split; build it "
                        "through a Workspace (Workspace.task)")
    return Task(NAME, demonstrations(train), demonstrations(heldout),
                train_prompts=list(dict.fromkeys(train.prompts)),
                heldout_prompts=list(dict.fromkeys(heldout.prompts)))


def read_prompt_set(source: str, *, conversational: bool, tokenizer=None, split: str = "train",
                    config: str = "",
                    column: str = "prompt") -> list[str]:
    """``eval.prompts``: the distinct prompts of a .txt file (one per line) or of rows with a prompt column
    (prompts alone, or pairs whose prompts are used), in any format ``preferences.source`` takes. Prompts are
    rendered as the training pairs' were: with ``conversational`` pairs, a list of messages, or a text
    prompt as one user message, goes through the chat template of ``tokenizer`` (a stand-in without one)."""
    what = "eval.prompts"
    if source.endswith(".txt") and Path(source).is_file():
        rows = [
            {column: line} for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    else:
        rows = read_rows(source, split, config, what=what)
    if not rows:
        raise DataError(f"{what}: {source}: no prompts (empty data)")
    prompts = []
    for i, row in enumerate(rows):
        where = f"{what}: {source}: row {i}"
        value = row.get(column) if isinstance(row, dict) else None
        if isinstance(value, str) and value.strip():
            prompts.append(chat.render_prompt([{"role": "user", "content": value}], tokenizer, where)
                           if conversational else value)
        elif isinstance(value, list) and conversational:
            prompts.append(chat.render_prompt(value, tokenizer, where))
        elif isinstance(value, list):
            raise DataError(f"{where}: the prompt is a list of messages but the preference pairs are plain "
                            "text; "
                            f"give evaluation prompts of the same kind as the pairs")
        else:
            raise DataError(f"{where}: no prompt (a row needs a non-empty {column!r} column; a .txt file "
                            "holds "
                            f"one prompt per line)")
    return list(dict.fromkeys(prompts))


def completions_per_prompt(data) -> str:
    """How many distinct completions each prompt has in the data, as counted ("2", or "2-5" when
    it varies)."""
    per_prompt: dict[str, set] = {}
    completions = data.completions if getattr(data, "unpaired", False) else None
    for i, prompt in enumerate(data.prompts):
        per_prompt.setdefault(prompt, set()).update([completions[i]] if completions else
                                                    [data.chosen[i], data.rejected[i]])
    counts = sorted({len(v) for v in per_prompt.values()}) or [0]
    return f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
