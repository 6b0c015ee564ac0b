"""Shared fixtures: a tiny GPT-2 with a BPE tokenizer trained in seconds on IMDb text, saved to disk so
recipes load it by path exactly as they would a Hub model, and one cache folder per test session."""

from __future__ import annotations

import os

import pytest
import torch

from alignkit.console import install_cli_handler

# tiny models gain nothing from a second thread, and two busy-waiting threads per process thrash when
# other work shares the two cores; CLI commands invoked in-process configure threads from the variable
os.environ.setdefault("ALIGNKIT_THREADS", "1")
torch.set_num_threads(1)

# library calls in tests print their notices as the CLI does (tests read those lines from stderr)
install_cli_handler()


@pytest.fixture(scope="session")
def imdb_model_dir(tmp_path_factory):
    """A random 2-layer GPT-2 (vocab 512) with a byte-level BPE trained on 400 IMDb reviews."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignkit.data.imdb import imdb_task
    from alignkit.data.task import TaskConfig
    from alignkit.models.builtin import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny_imdb_model")
    texts = imdb_task(TaskConfig(max_examples=600)).train_texts
    tokenizer = train_tokenizer(texts[:400], vocab_size=512)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("alignkit_cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    """Never touch the user's ~/.cache/alignkit from tests."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(cache_dir))


@pytest.fixture
def tiny_overrides(imdb_model_dir):
    """--set overrides that turn any bundled recipe into a seconds-long run on the tiny model and task."""
    return [
        f"model.name_or_path={imdb_model_dir}",
        "model.max_length=48",
        "task.max_examples=600",
        "preferences.n_prompts=48",
        "preferences.max_new_tokens=12",
        "eval.n_prompts=24",
        "eval.max_new_tokens=12",
    ]


@pytest.fixture(scope="session")
def compare_overrides(imdb_model_dir):
    """--set overrides of a small comparison on the tiny model and task (what the module-scoped comparison
    fixtures of test_compare and the run-folder reliability tests train once and share)."""
    return [f"model.name_or_path={imdb_model_dir}", "model.max_length=48", "task.max_examples=600",
            "preferences.n_prompts=48", "preferences.max_new_tokens=12", "eval.max_new_tokens=12"]
