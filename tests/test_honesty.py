"""Measurement honesty: every number describes what was actually sampled and trained.

One test per rule of the comparison issue: the reward model scores a completion the same way in training
and in PPO/Best-of-N (a), every method learns from the same pairs (c), LoRA has no dropout (e), a prompt is
cut once whatever completion follows (f), sampled completions record where they stopped and EOS is
appended exactly there (g), the value model's learning rate follows the policy's schedule (h), and a
summary carries its training budget (i). Best-of-N's analytic KL (b) is in test_baselines.py, the
generation config (d) and tempered KL in test_kl.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import cpu_runtime, make_workspace, tiny_gpt2, tiny_tokenizer

from alignkit.data.preferences import PreferenceData
from alignkit.methods.ppo import PPOTrainer
from alignkit.models.config import LoraSettings
from alignkit.models.loading import apply_lora
from alignkit.models.policy import Policy
from alignkit.models.scalar_head import ScalarModel, Scorer
from alignkit.models.sequences import encode_pairs
from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe

RECIPES = Path(__file__).resolve().parent.parent / "alignkit" / "recipes"


def tiny_policy(seed: int = 0) -> Policy:
    tok = tiny_tokenizer()
    return Policy(tiny_gpt2(tok, seed=seed), tok, torch.device("cpu"), max_length=32)


def plain_rows(rollout, tokenizer) -> list[int]:
    """Rows whose completion has no special token before its end: text round-trips to the same ids only
    there (a sampled <pad> or <unk> mid-completion is dropped when decoding, for any tokenizer)."""
    special = set(tokenizer.all_special_ids)
    rows = []
    for i, (ids, mask) in enumerate(zip(rollout.batch.input_ids, rollout.batch.completion_mask)):
        body = ids[mask.bool()].tolist()[:-1] if rollout.ended[i] else ids[mask.bool()].tolist()
        if not special & set(body):
            rows.append(i)
    return rows


def test_sampled_completions_record_eos_and_retokenize_to_the_sampled_ids():
    """(g) ``ended`` is True exactly where the sampler emitted EOS, and encoding the text with EOS appended
    only there gives back the very token ids that were sampled."""
    policy = tiny_policy()
    torch.manual_seed(0)
    rollout = policy.sample(["the movie", "i hated this story"] * 16, max_new_tokens=6, runtime=cpu_runtime())
    eos = policy.tokenizer.eos_token_id
    sampled = [ids[mask.bool()].tolist() for ids, mask in zip(rollout.batch.input_ids,
                                                              rollout.batch.completion_mask)]
    assert rollout.ended == [row[-1] == eos for row in sampled]
    rows = plain_rows(rollout, policy.tokenizer)
    assert any(rollout.ended[i] for i in rows) and not all(rollout.ended[i] for i in rows)
    part = rollout.select(rows)
    again = encode_pairs(policy.tokenizer, part.prompts, part.completions, max_length=32,
                         append_eos=part.ended)
    assert [ids[mask.bool()].tolist() for ids, mask in zip(again.input_ids, again.completion_mask)] == \
        [sampled[i] for i in rows]


def test_reward_model_scores_a_rollout_as_it_scores_training_text():
    """(a) The proxy reward PPO and Best-of-N use (text, EOS where the sampler stopped) equals the reward
    model on the exact sampled ids, so training and scoring see the same sequences."""
    policy = tiny_policy()
    scalar = ScalarModel(torch.nn.Module(), policy.tokenizer, torch.device("cpu"))
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(policy.tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        num_labels=1, pad_token_id=policy.tokenizer.pad_token_id)
    scalar.model = GPT2ForSequenceClassification(config).eval()
    torch.manual_seed(0)
    rollout = policy.sample(["the movie", "i hated this story"] * 16, max_new_tokens=6, runtime=cpu_runtime())
    rollout = rollout.select(plain_rows(rollout, policy.tokenizer))
    from alignkit.models.config import ModelConfig

    scorer = Scorer(scalar, ModelConfig(max_length=32))
    as_text = scorer(rollout.prompts, rollout.completions, rollout.ended)
    with torch.no_grad():
        as_sampled = scalar.sequence_scores(rollout.batch)
    torch.testing.assert_close(as_text, as_sampled, rtol=1e-5, atol=1e-5)
    without_eos = scorer(rollout.prompts, rollout.completions, False)
    ended = torch.tensor(rollout.ended)
    assert not torch.allclose(without_eos[ended], as_sampled[ended])  # what the old scoring got wrong


def test_prompt_is_cut_once_whatever_the_completion():
    """(f) A long prompt keeps the same last max_prompt_length tokens before a short and a long completion."""
    tok = tiny_tokenizer()
    prompt = "the movie was great and the acting was superb i loved this story"
    batch = encode_pairs(
        tok,
        [prompt, prompt],
        ["good", "it was moving and brilliant and really quite good and great"],
        max_length=16,
        max_prompt_length=6,
    )
    prompts = [ids[(attn - comp).bool()].tolist() for ids, attn, comp in
               zip(batch.input_ids, batch.attention_mask, batch.completion_mask)]
    assert prompts[0] == prompts[1] == tok(prompt, add_special_tokens=False)["input_ids"][-6:]
    assert batch.completion_mask[1].sum() == 16 - 6  # the completion is what is cut


def test_lora_adapter_has_no_dropout():
    """(e) Dropout off everywhere, the adapter's included, so log-probs are deterministic in training mode."""
    policy = tiny_policy()
    model = apply_lora(policy.model, LoraSettings(r=4, target_modules=["c_attn"]))
    model.train()
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    batch = encode_pairs(policy.tokenizer, ["the movie"], ["was great"], max_length=16)
    with torch.no_grad():
        first, second = (model(input_ids=batch.input_ids).logits for _ in range(2))
    assert torch.equal(first, second)


@pytest.fixture
def tiny_recipe(tiny_overrides):
    def make(path: str, *extra: str):
        return load_recipe(RECIPES / path, [*tiny_overrides, "device=cpu", *extra])
    return make


def test_every_method_learns_from_the_same_training_pairs(tmp_path, tiny_recipe):
    """(c) The reward model, DPO and Preferred-FT all train on ``ws.train_pairs``; the held-out prompt
    groups are never trained on; each budget counts exactly those pairs."""
    recipe = tiny_recipe("dpo_imdb.yaml", "dpo.epochs=1", "dpo.batch_size=16",
                         "preferences.heldout_fraction=0.25")
    ws = make_workspace(recipe, tmp_path / "ws")
    train, heldout = ws.train_pairs, ws.heldout_pairs
    assert len(train) + len(heldout) == len(ws.preferences) and set(train.group).isdisjoint(heldout.group)
    assert len(set(heldout.group)) == int(len(set(ws.preferences.group)) * 0.25)
    summary = run_recipe(recipe, tmp_path / "dpo")
    assert summary.budget["train_sequences"] == 2 * len(train)  # one epoch: chosen + rejected of each pair
    assert summary.training_data["train_pairs"] == len(train)
    rm = tiny_recipe("rm_imdb.yaml", "reward_model.epochs=1", "preferences.heldout_fraction=0.25")
    rm_summary = run_recipe(rm, tmp_path / "rm")
    rm_numbers = rm_summary.results
    assert rm_numbers["n_train_pairs"] == len(train) and rm_numbers["n_heldout_pairs"] == len(heldout)


def test_value_learning_rate_follows_the_policy_schedule(tmp_path, tiny_recipe):
    """(h) Both optimisers decay on the same schedule, each from its own peak rate."""
    recipe = tiny_recipe("ppo_imdb.yaml", "ppo.reward=gold", "ppo.value_init=policy", "ppo.steps=3",
                         "ppo.rollout_size=8", "ppo.minibatch_size=4", "ppo.max_new_tokens=6",
                         "ppo.prompt_pool=32")
    ws = make_workspace(recipe, tmp_path)
    trainer = PPOTrainer(ws, recipe.method_config("ppo"))
    trainer.train()
    cfg = recipe.method_config("ppo")
    policy_scale = trainer.opt.param_groups[0]["lr"] / cfg.lr
    value_scale = trainer.value_opt.param_groups[0]["lr"] / cfg.value_lr
    assert policy_scale < 1.0 and value_scale == pytest.approx(policy_scale)
    assert ws.budget.steps == 3 * cfg.ppo_epochs * 2 and ws.budget.generated_sequences == 3 * 8


def test_summary_records_its_training_budget(tmp_path, tiny_recipe):
    """(i) Steps, sequences and tokens trained on sit next to the results, and match the recipe."""
    recipe = tiny_recipe("dpo_imdb.yaml", "dpo.max_steps=3", "dpo.batch_size=8", "eval.every_steps=0")
    summary = run_recipe(recipe, tmp_path / "run")
    budget = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())["budget"]
    assert budget == summary.budget
    assert (
        budget["steps"] == 3 and budget["train_sequences"] == 3 * 8 * 2 and budget["train_tokens"] > 3 * 8 * 2
    )
    assert budget["generated_sequences"] == 0  # DPO samples nothing while training
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["cost"]["train_wall_s"] > 0 and "cost" not in summary.to_dict()  # measured elsewhere


def test_preference_pairs_keep_the_eos_flags_of_their_completions():
    """(g) Generated pairs carry each completion's stop flag through ranking and the cache."""
    data = PreferenceData(["p", "p"], ["a", "b"], ["c", "d"], [0, 0], [1.0, 1.0], [0.0, 0.0], [True, False],
                          [False, True])
    again = PreferenceData.from_records(data.records())
    assert again.eos_flags([0, 1], append_eos=False) == ([True, False], [False, True])
    plain = PreferenceData(["p"], ["a"], ["c"])
    assert plain.eos_flags([0], append_eos=True) == ([True], [True])
