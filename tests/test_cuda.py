"""CUDA paths that CPU CI cannot run: device placement, bf16/fp16 training steps, fp16 loss scaling, NF4 4-bit
with LoRA, the lean PPO layout's reference, and CPU/CUDA agreement of sampling and KL.

Every test is marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is False, so CPU CI collects
and skips them; ``benchmarks/gpu/run.sh`` runs them on a GPU machine (``pytest -m cuda tests/test_cuda.py``).
Models are tiny random GPT-2s built here (tests/tiny.py), never the Hub. Each test builds its own
:class:`~alignkit.runtime.Runtime` and calls it directly. ``ALIGNKIT_CUDA_TESTS_DEVICE=cpu`` runs them on the
CPU instead (what ``benchmarks/gpu/run.sh --dry-run`` does, so that the API they call is checked everywhere).
"""

from __future__ import annotations

import os

import pytest
import torch
from tiny import tiny_gpt2, tiny_tokenizer  # tests/tiny.py (pytest puts tests/ on sys.path)

from alignkit.models.sequences import forward

DEVICE = os.environ.get("ALIGNKIT_CUDA_TESTS_DEVICE", "cuda")  # "cpu": a dry run of these tests on the CPU
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                                   reason="needs a CUDA device")]

CUDA = torch.device(DEVICE)
CPU = torch.device("cpu")
PROMPTS = ["the movie was", "i loved this story", "review : what did you think of it ?"]
COMPLETIONS = ["great and the acting was superb", "it was moving", "boring and awful"]


# --------------------------------------------------------------------------------------------------
# sampling and the KL pass, with this file's settings


def sample(policy, prompts: list[str], *, max_new_tokens: int, temperature: float):
    """``Policy.sample`` in one process."""
    return policy.sample(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                         runtime=cuda_runtime())


def sequence_kl(policy, reference, rollout):
    """``alignkit.eval.kl.sequence_kl`` at temperature 1, top_p 1, in one process."""
    from alignkit.eval.kl import sequence_kl as kl

    return kl(policy, reference, rollout, cuda_runtime())


# --------------------------------------------------------------------------------------------------
# helpers


def cuda_runtime(precision: str = "fp32"):
    """A fresh runtime on ``cuda`` (accelerate's shared state reset, so an earlier CPU runtime of this
    process does not decide the device)."""
    from accelerate.state import AcceleratorState

    from alignkit.runtime import Runtime

    AcceleratorState._reset_state(reset_partial_state=True)
    return Runtime(DEVICE, precision)


def policy_on(device: torch.device, seed: int = 0, **model_kwargs):
    """A tiny random policy on ``device`` (the same weights for the same seed, whatever the device)."""
    from alignkit.models.policy import Policy

    tokenizer = tiny_tokenizer()
    return Policy(tiny_gpt2(tokenizer, seed=seed, **model_kwargs).to(device), tokenizer, device,
                  max_length=32)


def train_steps(runtime, policy, steps: int) -> list[float]:
    """``steps`` optimiser steps maximising the log-likelihood of the fixed completions, through the
    runtime's autocast, backward, gradient finishing and step; returns the losses (skipped steps included)."""
    params = policy.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    batch = policy.encode(PROMPTS, COMPLETIONS)
    losses = []
    policy.model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = -policy.sequence_logprobs(batch).mean()
        runtime.backward(loss)
        norms = runtime.finish_gradients([params], [optimizer], max_norm=1.0)
        if not runtime.overflowed(norms):
            runtime.step([optimizer])
        losses.append(loss.item())
    return losses


# --------------------------------------------------------------------------------------------------
# device placement and precision


def test_runtime_places_the_run_on_cuda_and_scores_as_on_cpu():
    runtime = cuda_runtime()
    assert runtime.device.type == CUDA.type and runtime.describe()["device"].startswith(CUDA.type)
    on_cpu, on_cuda = policy_on(CPU), policy_on(runtime.device)
    batch = on_cuda.encode(PROMPTS, COMPLETIONS)
    assert batch.input_ids.device.type == CUDA.type
    assert all(p.device.type == CUDA.type for p in on_cuda.model.parameters())
    with torch.no_grad():
        gpu = on_cuda.sequence_logprobs(batch)
        cpu = on_cpu.sequence_logprobs(on_cpu.encode(PROMPTS, COMPLETIONS))
    assert gpu.device.type == CUDA.type
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_compute_in_low_precision_and_learn(precision):
    runtime = cuda_runtime(precision)
    low = torch.bfloat16 if precision == "bf16" else torch.float16
    policy = policy_on(runtime.device)
    with runtime.autocast(), torch.no_grad():
        logits = forward(policy.model, policy.encode(PROMPTS, COMPLETIONS)).logits
    assert logits.dtype == low  # autocast really ran the matmuls in the low precision
    assert (runtime.scaler is not None) == (precision == "fp16")
    losses = train_steps(runtime, policy, steps=8)
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())  # fp32 master weights
    assert losses[-1] < losses[0] - 0.1, losses


def test_fp16_loss_scaling_skips_an_overflowing_step_and_lowers_the_scale():
    runtime = cuda_runtime("fp16")
    weight = torch.nn.Parameter(torch.ones(4, device=CUDA))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    runtime.backward((weight * 3e38).sum())  # scaled by 65536 the gradient is inf
    norms = runtime.finish_gradients([[weight]], [optimizer], max_norm=1.0)
    scale = runtime.scaler.get_scale()
    assert runtime.overflowed(norms)
    assert runtime.scaler.get_scale() < scale
    assert torch.equal(weight.detach(), torch.ones(4, device=CUDA))  # nothing applied
    optimizer.zero_grad(set_to_none=True)
    runtime.backward(weight.sum())
    norms = runtime.finish_gradients([[weight]], [optimizer], max_norm=0)
    assert not runtime.overflowed(norms)
    runtime.step([optimizer])
    torch.testing.assert_close(weight.detach(), torch.full((4,), 0.9, device=CUDA))  # unscaled gradient 1


# --------------------------------------------------------------------------------------------------
# 4-bit and LoRA


def saved_model(folder, n_embd: int = 128):
    """A tiny random GPT-2 and its tokenizer saved to ``folder`` (128 wide: NF4 quantises in blocks of 64)."""
    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer, n_layer=1, n_embd=n_embd).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_nf4_4bit_base_loads_on_cuda_and_a_lora_step_trains_only_the_adapter(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from alignkit.models.config import LoraSettings, ModelConfig
    from alignkit.models.policy import Policy

    folder = saved_model(tmp_path / "model")
    full = Policy.load(ModelConfig(name_or_path=str(folder)), cache_dir=tmp_path, runtime=cuda_runtime())
    quantized = Policy.load(ModelConfig(name_or_path=str(folder), load_in_4bit=True, lora=LoraSettings(r=4)),
                            cache_dir=tmp_path, runtime=cuda_runtime())
    layers = [m for m in quantized.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.device.type == CUDA.type and m.weight.quant_type == "nf4" for m in layers)
    batch = quantized.encode(PROMPTS, COMPLETIONS)
    with torch.no_grad():
        torch.testing.assert_close(quantized.sequence_logprobs(batch), full.sequence_logprobs(batch),
                                   rtol=0.1, atol=0.5)  # NF4 rounding, not another model
    frozen = {n: p.detach().clone() for n, p in quantized.model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in quantized.model.named_parameters() if p.requires_grad}
    train_steps(cuda_runtime(), quantized, steps=2)
    after = dict(quantized.model.named_parameters())
    assert adapter and all("lora_" in n for n in adapter)
    assert any(not torch.equal(after[n].detach(), before) for n, before in adapter.items())
    assert all(torch.equal(after[n].detach(), before) for n, before in frozen.items())


def test_lean_ppo_reference_is_the_adapter_off_policy_on_cuda():
    """The lean layout's reference is the LoRA policy with its adapter off: on CUDA it scores exactly as the
    untouched base model, while the trained adapter scores differently."""
    from alignkit.models.config import LoraSettings
    from alignkit.models.loading import apply_lora
    from alignkit.models.policy import Policy, Reference

    base = policy_on(CUDA, seed=3)
    lora = Policy(apply_lora(tiny_gpt2(base.tokenizer, seed=3), LoraSettings(r=4, target_modules=["c_attn"])),
                  base.tokenizer, CUDA, max_length=32)
    lora.model.to(CUDA)
    with torch.no_grad():
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that has trained
    reference = Reference(lora)
    assert reference.model is None  # no copy: the policy itself, adapter off
    batch = lora.encode(PROMPTS, COMPLETIONS)
    with torch.no_grad():
        expected = base.sequence_logprobs(batch)
        trained = lora.sequence_logprobs(batch)
    torch.testing.assert_close(reference.sequence_logprobs(batch), expected, rtol=1e-5, atol=1e-5)
    assert (trained - expected).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------------
# sampling and KL


def test_greedy_samples_and_sequence_kl_agree_between_cpu_and_cuda():
    on_cpu, on_cuda = policy_on(CPU, seed=1), policy_on(CUDA, seed=1)
    cpu_samples = sample(on_cpu, PROMPTS, max_new_tokens=8, temperature=0)
    cuda_samples = sample(on_cuda, PROMPTS, max_new_tokens=8, temperature=0)
    assert cuda_samples.completions == cpu_samples.completions
    ref_cpu, ref_cuda = policy_on(CPU, seed=2), policy_on(CUDA, seed=2)
    kl_cpu = sequence_kl(on_cpu, ref_cpu, cpu_samples)
    kl_cuda = sequence_kl(on_cuda, ref_cuda, cpu_samples)  # the same rollout, scored on each device
    assert (kl_cpu > 0.01).all()
    torch.testing.assert_close(torch.from_numpy(kl_cuda), torch.from_numpy(kl_cpu), rtol=1e-4, atol=1e-5)
