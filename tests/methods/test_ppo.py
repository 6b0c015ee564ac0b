"""PPO end to end on a tiny model: what it logs, that KL stays a valid (>= 0) number, that it learns,
and that the value model starts as an independent copy of the reward model (InstructGPT)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import make_workspace

from alignkit.methods.ppo import PPOConfig, _value_model, train_ppo
from alignkit.models.scalar_head import ScalarModel
from alignkit.recipe import load_recipe
from alignkit.registry import REWARDS, register_reward

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "ppo_imdb.yaml"
SMALL = ["ppo.value_init=policy", "ppo.rollout_size=16", "ppo.minibatch_size=8", "ppo.max_new_tokens=8",
         "ppo.prompt_pool=64"]

if "test-letter-e" not in REWARDS:
    @register_reward("test-letter-e")
    def letter_e(workspace):
        """Share of the letter e in the completion: a reward a tiny random policy can learn in a few steps."""
        return lambda prompts, completions: np.array([c.count("e") / max(1, len(c)) for c in completions])


def workspace(tmp_path, overrides):
    recipe = load_recipe(RECIPE, overrides)
    return make_workspace(recipe, tmp_path), recipe.method_config("ppo")


def test_ppo_gt_logs_every_metric_and_kl_is_never_negative(tmp_path, tiny_overrides):
    ws, cfg = workspace(tmp_path, tiny_overrides + SMALL + ["ppo.reward=gold", "ppo.steps=4",
                                                            "ppo.ptx_coef=0.1",
                                                            "ppo.target_kl=6", "ppo.kl_coef=0.2"])
    train_ppo(ws, cfg)
    records = ws.ctx.log.records
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    expected = {"reward/gold", "reward/proxy", "kl", "entropy", "loss/policy", "loss/value", "loss/ptx",
                "clipfrac", "approx_kl", "kl_coef"}
    assert expected <= set(records[0])
    kls = [r["kl"] for r in records]
    assert all(math.isfinite(k) and k >= 0 for k in kls)
    assert kls[0] == 0.0 and kls[-1] > 0  # the first rollout comes from pi == pi_ref
    assert records[0]["reward/gold"] == records[0]["reward/proxy"]  # PPO-GT optimises the gold reward
    coefs = [r["kl_coef"] for r in records]
    assert coefs[-1] < coefs[0]  # KL far below the 6-nat target: the adaptive coefficient relaxes


def test_ppo_raises_a_learnable_reward(tmp_path, tiny_overrides):
    ws, cfg = workspace(tmp_path, tiny_overrides + SMALL + [
        "gold_reward=test-letter-e", "ppo.reward=gold", "ppo.steps=20", "ppo.lr=0.003", "ppo.kl_coef=0.01",
        "ppo.rollout_size=32"])
    torch.manual_seed(0)
    train_ppo(ws, cfg)
    rewards = [r["reward/gold"] for r in ws.ctx.log.records]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.02, rewards


def test_value_model_starts_as_an_independent_copy_of_the_reward_model(tmp_path, tiny_overrides,
                                                                       imdb_model_dir):
    ws, _ = workspace(tmp_path, tiny_overrides)
    torch.manual_seed(0)
    reward_model = ScalarModel.from_backbone(ws.recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime)
    reward_model.bias = 0.25
    ws.provide(reward_model=reward_model)
    value = _value_model(ws, PPOConfig(value_init="reward_model"))
    batch = ws.sft.sample(ws.prompts("train", 4), max_new_tokens=6, runtime=ws.runtime).batch
    with torch.no_grad():
        torch.testing.assert_close(value.sequence_scores(batch), reward_model.sequence_scores(batch))
        for p in value.model.parameters():
            p.add_(1.0)  # training the value model must leave the reward model untouched
        assert not torch.allclose(value.sequence_scores(batch), reward_model.sequence_scores(batch))
    fresh = _value_model(ws, PPOConfig(value_init="policy", reward="gold"))
    assert not torch.equal(fresh.model.score.weight, reward_model.model.score.weight)


def test_gold_reward_with_reward_model_value_init_is_rejected(tmp_path, tiny_overrides):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="ppo.value_init: reward: gold trains no reward model"):
        load_recipe(RECIPE, tiny_overrides + ["ppo.reward=gold", "ppo.value_init=reward_model"])


def test_shared_trunk_value_learns(tmp_path, tiny_overrides):
    """A value head on the policy's trunk (no second model) still lets PPO raise the letter-e reward
    (measured 0.070 -> 0.164 over 20 iterations), and the head itself trains (it starts at 0)."""
    ws, cfg = workspace(tmp_path, tiny_overrides + SMALL + [
        "gold_reward=test-letter-e", "ppo.reward=gold", "ppo.value_model=shared", "ppo.steps=20",
        "ppo.lr=0.003", "ppo.kl_coef=0.01", "ppo.rollout_size=32"])
    torch.manual_seed(0)
    from alignkit.methods.ppo import PPOTrainer

    trainer = PPOTrainer(ws, cfg)
    trainer.train()
    rewards = [r["reward/gold"] for r in ws.ctx.log.records]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.05, rewards
    assert trainer.value.head.weight.abs().sum() > 0


def test_lean_layout_keeps_one_base_model(tmp_path, tiny_overrides):
    """LoRA + shared value: policy, reference (adapter off) and value (a head) are one base model; the
    reference's log-probs equal the adapter-disabled policy's exactly, and adapter and head both train."""
    ws, cfg = workspace(tmp_path, tiny_overrides + SMALL + [
        "gold_reward=test-letter-e", "ppo.reward=gold", "ppo.value_model=shared", "ppo.steps=3",
        "ppo.lr=0.01", "model.lora={r: 8}"])
    from alignkit.methods.ppo import PPOTrainer
    from alignkit.models.value_head import SharedTrunkValue

    trainer = PPOTrainer(ws, cfg)
    assert isinstance(trainer.value, SharedTrunkValue) and trainer.value.policy is trainer.policy
    assert trainer.reference.model is None  # the reference is the policy with its adapter off
    model_weights = {id(p) for p in trainer.policy.model.parameters()}
    assert all(id(p) not in model_weights for p in trainer.value.parameters())
    assert sum(p.numel() for p in trainer.value.parameters()) == trainer.value.head.in_features + 1
    adapter = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if p.requires_grad}
    policy = trainer.train()
    assert any(not torch.equal(adapter[n], p.detach()) for n,
               p in policy.model.named_parameters() if n in adapter)
    assert trainer.value.head.weight.abs().sum() > 0
    batch = policy.encode(["the movie", "i"], [" was great", " hated it"])
    with torch.no_grad():
        reference = trainer.reference.token_logprobs(batch)
        with policy.model.disable_adapter():
            adapter_off = policy.token_logprobs(batch)
        trained = policy.token_logprobs(batch)
    assert torch.equal(reference, adapter_off)
    assert not torch.equal(trained, adapter_off)


def test_shared_value_rejects_reward_model_init(tiny_overrides):
    from alignkit.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.value_init: value_model: shared puts a fresh value head"):
        load_recipe(RECIPE, tiny_overrides + ["ppo.value_model=shared"])


def test_ppo_can_score_with_a_4bit_reward_model(tmp_path, tiny_overrides, imdb_model_dir):
    """Memory-lean PPO: the frozen reward model loads with NF4 4-bit backbone weights, scores like the full
    one up to quantisation, takes less memory, and PPO trains against it."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from alignkit.methods.ppo import PPOTrainer

    wide = tmp_path / "wide"  # bitsandbytes' CPU 4-bit kernels quantise blocks of 64 input features
    tokenizer = AutoTokenizer.from_pretrained(imdb_model_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=128, n_layer=1, n_head=2, n_positions=64,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    ws, cfg = workspace(tmp_path, tiny_overrides + SMALL + [
        f"model.name_or_path={wide}", "ppo.reward_model_4bit=true", "ppo.steps=2",
        "reward_model.max_steps=4"])
    assert cfg.reward_model_4bit
    trainer = PPOTrainer(ws, cfg)
    quantized, full = ws.reward_model_4bit, ws.reward_model
    assert getattr(quantized.model, "is_loaded_in_4bit", False) and not getattr(full.model,
                                                                                "is_loaded_in_4bit", False)
    assert quantized.model.get_memory_footprint() < 0.8 * full.model.get_memory_footprint()
    prompts, completions = ["This movie was", "I think"] * 4, [" great fun", " it is bad", " fine",
                                                               " awful"] * 2
    approx, exact = trainer.proxy(prompts, completions), ws.proxy_reward(prompts, completions)
    assert np.abs(approx - exact).max() < 0.1 * max(1.0, np.abs(exact).max())
    assert not np.array_equal(approx, exact)  # really the quantised weights scoring
    trainer.train()
    minibatches = -(-cfg.rollout_size // cfg.minibatch_size)
    # every minibatch took its step
    assert trainer.ws.budget.steps == cfg.steps * cfg.ppo_epochs * minibatches


def test_4bit_reward_model_needs_the_value_model_not_to_copy_it(tiny_overrides):
    from alignkit.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.reward_model_4bit: the value model would still copy"):
        load_recipe(RECIPE, tiny_overrides + ["ppo.reward_model_4bit=true"])


def test_4bit_reward_model_with_the_gold_reward_is_refused(tiny_overrides):
    from alignkit.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.reward_model_4bit: reward: gold uses no reward model"):
        load_recipe(RECIPE, tiny_overrides + SMALL + ["ppo.reward=gold", "ppo.reward_model_4bit=true"])
