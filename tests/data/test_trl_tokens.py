"""The same pairs give the same token ids in alignkit as in trl 1.16: prompt, chosen and rejected (and KTO's
prompt and completion), plain text and conversational, read through alignkit's data path (load_preferences,
eos_flags, pair_batch) on one side and trl's own ``_prepare_dataset`` on the other (EOS appended to plain-text
completions, none after a chat template's end of turn)."""

from __future__ import annotations

import json
import types

import pytest
import torch
from tiny import CHATML  # tests/tiny.py
from transformers import AutoTokenizer

from alignkit.data.preferences import PreferenceConfig, load_preferences
from alignkit.data.unpaired import UnpairedData
from alignkit.models.pairs import pair_batch
from alignkit.models.policy import Policy

pytest.importorskip("trl")

PLAIN = [
    {"prompt": "Review: the film was", "chosen": " moving and brilliant.", "rejected": " dull."},
    {"prompt": "Review: I watched it twice and", "chosen": " loved it.", "rejected": " hated it!"},
    {"prompt": "What did you think of the ending?", "chosen": " A surprise.", "rejected": " Boring."},
    {"prompt": "The plot", "chosen": " is great", "rejected": " is not great at all, really"},
]


def conversational(row: dict) -> dict:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": row["rejected"].strip()}]}


@pytest.fixture
def tokenizer(imdb_model_dir):
    tok = AutoTokenizer.from_pretrained(imdb_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def trl_ids(trainer: str, rows: list[dict], tokenizer) -> list[dict]:
    """trl's own dataset preparation (EOS, tokenization, prompt/completion split) on ``rows``."""
    from datasets import Dataset

    module = __import__(f"trl.trainer.{trainer.lower()}_trainer", fromlist=[f"{trainer}Trainer"])
    prepare = getattr(module, f"{trainer}Trainer")._prepare_dataset
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    owner = types.SimpleNamespace(_tokenizer=tokenizer, calculate_KL=False)
    return list(prepare(owner, Dataset.from_list(rows), tokenizer, args, "train"))


def alignkit_ids(tmp_path, rows: list[dict], tokenizer) -> tuple[list, list, list]:
    """alignkit's: the pairs as read from a file with default settings, as one DPO batch of the policy."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PreferenceConfig(source=str(path))
    data = load_preferences(cfg, lambda: tokenizer)
    policy = Policy(None, tokenizer, torch.device("cpu"), max_length=256, max_prompt_length=128)
    batch = pair_batch(policy, data, list(range(len(data))), cfg.append_eos)
    return split_rows(batch, len(data))


def rows_of(batch) -> tuple[list, list]:
    """Each row's prompt ids and completion ids, padding left out."""
    prompts, completions = [], []
    for ids, mask, completion in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(),
                                     batch.completion_mask.tolist()):
        prompts.append([t for t, m, c in zip(ids, mask, completion) if m and not c])
        completions.append([t for t, c in zip(ids, completion) if c])
    return prompts, completions


def split_rows(batch, n: int) -> tuple[list, list, list]:
    prompts, completions = rows_of(batch)
    assert prompts[:n] == prompts[n:]  # chosen and rejected rows see the same prompt ids
    return prompts[:n], completions[:n], completions[n:]


@pytest.mark.parametrize("kind", ["standard", "conversational"])
def test_dpo_pairs_tokenize_as_trl_tokenizes_them(tmp_path, tokenizer, kind):
    rows = PLAIN if kind == "standard" else [conversational(r) for r in PLAIN]
    theirs = trl_ids("DPO", rows, tokenizer)
    prompts, chosen, rejected = alignkit_ids(tmp_path, rows, tokenizer)
    assert prompts == [t["prompt_ids"] for t in theirs]
    assert chosen == [t["chosen_ids"] for t in theirs]
    assert rejected == [t["rejected_ids"] for t in theirs]
    ends = {c[-1] for c in chosen + rejected}
    if kind == "standard":  # EOS after every plain-text completion, as trl appends it
        assert ends == {tokenizer.eos_token_id}
    else:  # the template's end of turn, no EOS after it
        assert tokenizer.eos_token_id not in {t for c in chosen + rejected for t in c}


@pytest.mark.parametrize("kind", ["standard", "conversational"])
def test_kto_rows_tokenize_as_trl_tokenizes_them(tmp_path, tokenizer, kind):
    from alignkit.methods.kto import unpaired_examples

    pairs = PLAIN if kind == "standard" else [conversational(r) for r in PLAIN]
    rows = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
            for r in pairs for side in ("chosen", "rejected")]
    theirs = trl_ids("KTO", rows, tokenizer)
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PreferenceConfig(source=str(path))
    data = load_preferences(cfg, lambda: tokenizer)
    assert isinstance(data, UnpairedData)
    prompts, completions, labels, eos = unpaired_examples(data, cfg.append_eos)
    policy = Policy(None, tokenizer, torch.device("cpu"), max_length=256, max_prompt_length=128)
    ours_prompts, ours_completions = rows_of(policy.encode(prompts, completions, eos))
    assert ours_prompts == [t["prompt_ids"] for t in theirs]
    assert ours_completions == [t["completion_ids"] for t in theirs]
    assert labels == [t["label"] for t in theirs]
