"""LoRA: only the adapter trains, and the reference is the same model with the adapter switched off; with
a 4-bit (NF4) base, every method that trains a policy, the reward model and PPO's value models train
adapters through the real pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny import cpu_runtime, make_workspace

from alignkit.methods.dpo import train_dpo
from alignkit.models.sequences import encode_pairs, sequence_logprobs
from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="session")
def wide_model_dir(imdb_model_dir, tmp_path_factory):
    """A random 1-layer, 128-wide GPT-2 with the tiny IMDb tokenizer: bitsandbytes' CPU 4-bit kernels
    quantise in blocks of 64 input features, which the 32-wide tiny model's layers are not."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("wide_imdb_model")
    tokenizer = AutoTokenizer.from_pretrained(imdb_model_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=128, n_layer=1, n_head=2, n_positions=64,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                               bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_lora_dpo_trains_the_adapter_against_the_adapter_disabled_reference(tmp_path, tiny_overrides):
    rows = [{"prompt": p, "chosen": " a wonderful film", "rejected": " a terrible film"}
            for p in ("This movie is", "Overall", "Honestly", "My verdict:")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={data}", "model.lora.r=4",
                                "model.lora.target_modules=[c_attn]", "dpo.lr=0.03", "dpo.batch_size=4",
                                "dpo.max_steps=30", "dpo.warmup_steps=0", "dpo.log_every=1"])
    ws = make_workspace(recipe, tmp_path)
    policy = train_dpo(ws, recipe.method_config("dpo"))
    assert policy.is_adapter
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    records = ws.ctx.log.records
    assert records[-1]["rewards/margins"] > records[0]["rewards/margins"] + 0.25
    assert records[-1]["loss"] < records[0]["loss"]

    batch = encode_pairs(policy.tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
                         max_length=32)
    reference = ws.reference_for(policy)
    with torch.no_grad():
        base = sequence_logprobs(ws.sft.model, batch)
        torch.testing.assert_close(reference.sequence_logprobs(batch), base)  # adapter off == the SFT model
        assert not torch.allclose(policy.sequence_logprobs(batch), base)  # adapter on has moved


def test_4bit_base_with_lora_scores_close_to_full_precision_and_trains_only_the_adapter(wide_model_dir):
    from alignkit.models.config import LoraSettings, ModelConfig
    from alignkit.models.policy import Policy

    full = Policy.load(ModelConfig(name_or_path=str(wide_model_dir)), cache_dir=wide_model_dir,
                       runtime=cpu_runtime())
    quantized = Policy.load(ModelConfig(name_or_path=str(wide_model_dir), load_in_4bit=True,
                                        lora=LoraSettings(r=4, target_modules=["c_attn"])),
                            cache_dir=wide_model_dir, runtime=cpu_runtime())
    batch = encode_pairs(full.tokenizer, ["This movie was", "I think"], [" great fun", " it is bad"],
                         max_length=32)
    exact = full.sequence_logprobs(batch).detach()
    approx = quantized.sequence_logprobs(batch)
    assert getattr(quantized.model.base_model.model, "is_loaded_in_4bit", False)
    # NF4 rounding, not a different model
    torch.testing.assert_close(approx.detach(), exact, rtol=0.1, atol=0.5)
    approx.sum().backward()
    with_grad = {n for n, p in quantized.model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)



def test_4bit_policy_scores_alike_in_eval_and_train_mode_and_trains_after_sampling(wide_model_dir):
    """bitsandbytes would repack CPU 4-bit weights into an inference-only format at the first no-grad eval
    forward (on AVX512-BF16 CPUs), after which training fails and scores shift; the loader keeps one path."""
    from alignkit.models.config import LoraSettings, ModelConfig
    from alignkit.models.policy import Policy

    policy = Policy.load(ModelConfig(name_or_path=str(wide_model_dir), load_in_4bit=True,
                                     lora=LoraSettings(r=4)),
                         cache_dir=wide_model_dir, runtime=cpu_runtime())
    batch = policy.encode(["This movie was", "I think"], [" great fun", " it is bad"])
    policy.model.train()
    training = policy.sequence_logprobs(batch).detach()
    # eval mode, no gradients: where the repacking happened
    policy.sample(["This movie was"], max_new_tokens=4, runtime=cpu_runtime())
    with torch.no_grad():
        torch.testing.assert_close(policy.sequence_logprobs(batch), training, rtol=0, atol=0)
    policy.model.train()
    policy.sequence_logprobs(batch).sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in policy.trainable_parameters())


# --------------------------------------------------------------------------------------------------
# LoRA on a 4-bit base through the real pipeline, every method that trains a model

PPO_SMALL = ["ppo.steps=2", "ppo.rollout_size=8", "ppo.minibatch_size=4", "ppo.ppo_epochs=1",
             "ppo.max_new_tokens=8", "ppo.prompt_pool=32", "ppo.checkpoint_every=0"]


def online_small(method: str) -> list[str]:
    """Two trl steps of 2 prompts x 2 completions of 8 tokens."""
    return [f"{method}.{key}={value}" for key, value in
            {"steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 8,
             "prompt_pool": 16}.items()]


def offline_small(section: str, **extra) -> list[str]:
    """Three optimiser steps at a learning rate that moves a fresh adapter at once."""
    settings = {"max_steps": 3, "batch_size": 8, "warmup_steps": 0, "lr": 0.005, **extra}
    return [f"{section}.{key}={value}" for key, value in settings.items()]


# run id: (bundled recipe, overrides, the model classes the run loads: all must come out 4-bit)
POLICY_RUNS = {
    "sft": ("sft", offline_small("sft"), {"GPT2LMHeadModel"}),
    "preferred_ft": ("preferred_ft", offline_small("preferred_ft"), {"GPT2LMHeadModel"}),
    "unlikelihood": ("unlikelihood", offline_small("unlikelihood", batch_size=4), {"GPT2LMHeadModel"}),
    "dpo": ("dpo", offline_small("dpo", batch_size=4), {"GPT2LMHeadModel"}),
    "simpo": ("simpo", offline_small("dpo", batch_size=4), {"GPT2LMHeadModel"}),  # reference-free loss
    "kto": ("kto", offline_small("kto"), {"GPT2LMHeadModel"}),
    "ppo_gt": ("ppo", [*PPO_SMALL, "ppo.reward=gold", "ppo.value_init=policy"],
               {"GPT2LMHeadModel", "GPT2ForSequenceClassification"}),  # a separate (LoRA) value model
    "ppo_shared_value": ("ppo", [*PPO_SMALL, "ppo.reward=gold", "ppo.value_init=policy",
                                 "ppo.value_model=shared"],
                         {"GPT2LMHeadModel"}),  # the value head sits on the policy's own trunk
    "ppo_reward_model": ("ppo", [*PPO_SMALL, "reward_model.max_steps=2"],  # value model: a copy of the RM
                         {"GPT2LMHeadModel", "GPT2ForSequenceClassification"}),
    "grpo": ("grpo", [*online_small("grpo"), "grpo.reward=gold"], {"GPT2LMHeadModel"}),
    "rloo": ("rloo", [*online_small("rloo"), "reward_model.max_steps=2"],  # scored by the LoRA reward model
             {"GPT2LMHeadModel", "GPT2ForSequenceClassification"}),
    "rloo_4bit_reward_model": ("rloo", [*online_small("rloo"), "reward_model.max_steps=2",
                                        "rloo.reward_model_4bit=true"],  # the frozen scorer of memory-lean RL
                               {"GPT2LMHeadModel", "GPT2ForSequenceClassification"}),
}


def qlora_overrides(tiny_overrides: list[str], wide_model_dir: Path) -> list[str]:
    """The tiny task on the 128-wide model, NF4 4-bit base + rank-4 LoRA, with a minimal evaluation."""
    return [*tiny_overrides, f"model.name_or_path={wide_model_dir}", "model.load_in_4bit=true",
            "model.lora={r: 4}",
            "eval.n_prompts=8", "eval.temperatures=[]", "eval.every_steps=0", "eval.diversity=false"]


@pytest.fixture
def loaded_models(monkeypatch):
    """Every transformers model the run loads (policies, reward and value models), recorded as loaded."""
    from alignkit.models import policy, scalar_head

    loaded = []

    def recording(auto_cls, cfg, path, **extra):
        model = original(auto_cls, cfg, path, **extra)
        loaded.append(model)
        return model

    original = policy.load_pretrained
    monkeypatch.setattr(policy, "load_pretrained", recording)
    monkeypatch.setattr(scalar_head, "load_pretrained", recording)
    return loaded


def is_nf4(model) -> bool:
    """Really quantised by bitsandbytes: flagged 4-bit, and all four linear layers of the one transformer
    block bitsandbytes ``Linear4bit`` with packed NF4 uint8 weights (under LoRA, peft's wrappers hold them
    as ``base_layer``); the embeddings and head stay unquantised, as transformers leaves them."""
    import bitsandbytes as bnb

    layers = {name.removesuffix(".base_layer"): m for name, m in model.named_modules()
              if isinstance(m, bnb.nn.Linear4bit)}
    return bool(getattr(model, "is_loaded_in_4bit", False)) and len(layers) == 4 and all(
        m.weight.dtype == torch.uint8 and m.weight.quant_state.quant_type == "nf4" for m in layers.values())


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A saved run model's tensors, which must be a peft adapter and nothing else."""
    from safetensors.torch import load_file

    names = {p.name for p in folder.iterdir()}
    assert "adapter_config.json" in names and "adapter_model.safetensors" in names
    assert not names & {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "config.json"}
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_trained_lora(weights: dict[str, torch.Tensor]) -> None:
    """LoRA's B starts at zero: every B of the saved adapter is non-zero only if training moved it."""
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("run", list(POLICY_RUNS))
def test_every_method_trains_a_lora_adapter_on_a_4bit_base(run, tmp_path, tiny_overrides, wide_model_dir,
                                                          loaded_models):
    """QLoRA through the real pipeline: the run finishes, every model it loaded (SFT policy, trained
    policy, reward and value models) has NF4 weights, the saved policy is the adapter alone and it moved
    from its zero init, and the evaluation's gold reward and KL are finite numbers."""
    recipe_name, overrides, model_classes = POLICY_RUNS[run]
    recipe = load_recipe(RECIPES / f"{recipe_name}_imdb.yaml", [*qlora_overrides(tiny_overrides,
                                                                                 wide_model_dir),
                                                                *overrides])
    summary = run_recipe(recipe, tmp_path / "run")

    assert {type(m).__name__ for m in loaded_models} == model_classes
    assert all(is_nf4(m) for m in loaded_models)
    weights = adapter_weights(tmp_path / "run" / "model")
    assert weights and all("lora_" in name for name in weights)  # no base, head or value weights
    assert_trained_lora(weights)
    config = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["r"] == 4
    assert summary.steps > 0
    assert math.isfinite(summary.gold_reward_mean) and 0 <= summary.gold_reward_mean <= 1
    assert math.isfinite(summary.kl_mean) and summary.kl_mean > -1e-6


@pytest.mark.parametrize("load_in_4bit", [True, False], ids=["4bit", "full_precision_base"])
def test_lora_reward_model_trains_adapter_and_head_and_reloads_exactly(load_in_4bit, tmp_path, tiny_overrides,
                                                                        wide_model_dir, loaded_models):
    """With model.lora the reward model is a SEQ_CLS adapter (the head trained in full, as peft's
    modules_to_save) on the backbone, 4-bit or not; it saves as the adapter and reloads onto the base
    (the cache folder PPO, GRPO/RLOO and Best-of-N load) scoring exactly as when it was evaluated."""
    from alignkit.methods.reward_model import score_pairs
    from alignkit.models.scalar_head import ScalarModel, Scorer

    overrides = [*qlora_overrides(tiny_overrides, wide_model_dir),
                 f"model.load_in_4bit={str(load_in_4bit).lower()}",
                 "reward_model.max_steps=3", "reward_model.lr=0.01"]
    recipe = load_recipe(RECIPES / "rm_imdb.yaml", overrides)
    summary = run_recipe(recipe, tmp_path / "run")
    assert [type(m).__name__ for m in loaded_models if "Classification" in type(m).__name__] == \
        ["GPT2ForSequenceClassification"]  # one reward model trained
    assert all(is_nf4(m) == load_in_4bit for m in loaded_models)

    folder = tmp_path / "run" / "model"
    weights = adapter_weights(folder)
    assert_trained_lora(weights)
    assert {n for n in weights if "lora_" not in n} == {"base_model.model.score.weight"}  # the trained head
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]

    ws = make_workspace(recipe, tmp_path / "ws")
    reloaded = ScalarModel.from_backbone(recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime,
                                         path=str(folder))
    assert is_nf4(reloaded.model.get_base_model()) == load_in_4bit
    assert reloaded.bias == summary.results["reward_bias"] != 0.0
    _, _, _, scores = score_pairs(Scorer(reloaded, recipe.model), ws.heldout_pairs,
                                  recipe.preferences.append_eos)
    assert float(scores.double().mean()) == pytest.approx(summary.results["heldout_reward_mean"], abs=1e-5)
    fresh = ScalarModel.from_backbone(recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime)
    _, _, _, untrained = score_pairs(Scorer(fresh, recipe.model), ws.heldout_pairs,
                                     recipe.preferences.append_eos)
    assert not torch.allclose(untrained, scores)  # the reloaded adapter and head are really the trained ones
    trainable = {n for n, p in fresh.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score.modules_to_save" in n for n in trainable)


def test_ppo_value_model_copied_from_a_4bit_lora_reward_model_trains_its_own_adapter(tmp_path, tiny_overrides,
                                                                                    wide_model_dir):
    """value_init: reward_model with a QLoRA reward model: the value model is an independent copy (NF4
    base, adapter and head) whose adapter and head train, while the reward model stays as it was."""
    from alignkit.methods.ppo import PPOTrainer

    recipe = load_recipe(RECIPES / "ppo_imdb.yaml", [*qlora_overrides(tiny_overrides, wide_model_dir),
                                                     *PPO_SMALL,
                                                     "reward_model.max_steps=2", "ppo.value_lr=0.01"])
    ws = make_workspace(recipe, tmp_path)
    trainer = PPOTrainer(ws, recipe.method_config("ppo"))
    value, reward_model = trainer.value.model, ws.reward_model.model
    assert is_nf4(value.get_base_model()) and is_nf4(reward_model.get_base_model())
    trainable = {n: p for n, p in value.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score.modules_to_save" in n for n in trainable)
    assert {id(p) for p in trainer.value.parameters()}.isdisjoint(id(p) for p in reward_model.parameters())
    before = {n: p.detach().clone() for n, p in trainable.items()}
    rm_before = {n: p.detach().clone() for n, p in reward_model.named_parameters() if n in trainable}
    trainer.train()
    assert all(not torch.equal(p, before[n]) for n, p in trainable.items())
    assert all(torch.equal(p, rm_before[n]) for n, p in reward_model.named_parameters() if n in rm_before)
