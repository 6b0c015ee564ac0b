"""LoRA: only the adapter trains, and the reference is the same model with the adapter switched off."""

from __future__ import annotations

import json

import torch

from alignkit.methods.dpo import train_dpo
from alignkit.models.sequences import encode_pairs, sequence_logprobs
from alignkit.recipe import load_recipe
from alignkit.runlog import MetricsLog
from alignkit.workspace import Workspace


def test_lora_dpo_trains_the_adapter_against_the_adapter_disabled_reference(tmp_path, tiny_overrides):
    rows = [{"prompt": p, "chosen": " a wonderful film", "rejected": " a terrible film"}
            for p in ("This movie is", "Overall", "Honestly", "My verdict:")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={data}", "model.lora.r=4",
                                "model.lora.target_modules=[c_attn]", "dpo.lr=0.03", "dpo.batch_size=4",
                                "dpo.max_steps=30", "dpo.warmup_steps=0", "dpo.log_every=1"])
    ws = Workspace(recipe, tmp_path, log=MetricsLog(None))
    policy = train_dpo(ws, recipe.method_config("dpo"))
    assert policy.is_adapter
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    records = ws.log.records
    assert records[-1]["rewards/margins"] > records[0]["rewards/margins"] + 0.25
    assert records[-1]["loss"] < records[0]["loss"]

    batch = encode_pairs(policy.tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows], max_length=32)
    reference = ws.reference_for(policy)
    with torch.no_grad():
        base = sequence_logprobs(ws.sft.model, batch)
        torch.testing.assert_close(reference.sequence_logprobs(batch), base)  # adapter off == the SFT model
        assert not torch.allclose(policy.sequence_logprobs(batch), base)  # adapter on has moved


def test_4bit_base_with_lora_scores_close_to_full_precision_and_trains_only_the_adapter(imdb_model_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from alignkit.models.policy import LoraSettings, ModelConfig, Policy

    # bitsandbytes' CPU 4-bit kernels quantise in blocks of 64 input features: use a 128-wide model
    tokenizer = AutoTokenizer.from_pretrained(imdb_model_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=128, n_layer=1, n_head=2, n_positions=64,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    full = Policy.load(ModelConfig(name_or_path=str(tmp_path)), cache_dir=tmp_path, device=torch.device("cpu"))
    quantized = Policy.load(ModelConfig(name_or_path=str(tmp_path), load_in_4bit=True,
                                        lora=LoraSettings(r=4, target_modules=["c_attn"])),
                            cache_dir=tmp_path, device=torch.device("cpu"))
    batch = encode_pairs(full.tokenizer, ["This movie was", "I think"], [" great fun", " it is bad"], max_length=32)
    exact = full.sequence_logprobs(batch).detach()
    approx = quantized.sequence_logprobs(batch)
    assert getattr(quantized.model.base_model.model, "is_loaded_in_4bit", False)
    torch.testing.assert_close(approx.detach(), exact, rtol=0.1, atol=0.5)  # NF4 rounding, not a different model
    approx.sum().backward()
    with_grad = {n for n, p in quantized.model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)
