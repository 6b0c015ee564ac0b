"""KTO: its loss by hand (paper Eq. 7), equal to trl 1.16's KTOTrainer on one batch (trl's own
tokenization, KL completions and forward pass), and the method training on the shared pairs."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses_match_trl import CHOSEN, MAX_LENGTH, PROMPTS, REJECTED, _models
from torch.testing import assert_close

from alignkit.losses.kto import kl_reference_point, kto_loss
from alignkit.methods.kto import unpaired_examples
from alignkit.models.sequences import encode_pairs, sequence_logprobs

T = torch.tensor


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_formula_by_hand():
    policy, reference = T([-2.0, -5.0, -3.0]), T([-3.0, -4.0, -3.5])  # ratios 1, -1, 0.5
    desirable = T([True, False, False])
    kl, beta, w_d, w_u = T(0.3), 0.5, 1.5, 0.7
    losses, rewards = kto_loss(policy, reference, desirable, kl, beta=beta, desirable_weight=w_d,
                               undesirable_weight=w_u)
    expected = [w_d * (1 - _sig(beta * (1 - 0.3))), w_u * (1 - _sig(beta * (0.3 + 1))),
                w_u * (1 - _sig(beta * (0.3 - 0.5)))]
    assert_close(losses, T(expected))
    assert_close(rewards, T([0.5, -0.5, 0.25]))


def test_kl_reference_point_is_clamped_and_detached():
    policy = T([-1.0, -2.0], requires_grad=True)
    assert kl_reference_point(policy, T([-2.0, -2.0])).item() == pytest.approx(0.5)
    assert kl_reference_point(policy, T([0.0, 0.0])).item() == 0.0  # negative estimate -> 0
    assert not kl_reference_point(policy, T([-2.0, -2.0])).requires_grad


def test_unpairing_keeps_every_completion_of_every_pair():
    from alignkit.data.preferences import PreferenceData

    data = PreferenceData(["p", "q"], ["good", "fine"], ["bad", "meh"], chosen_ended=[True, False],
                          rejected_ended=[False, True])
    prompts, completions, desirable, eos = unpaired_examples(data, append_eos=True)
    assert prompts == ["p", "p", "q", "q"] and completions == ["good", "bad", "fine", "meh"]
    assert desirable == [True, False, True, False] and eos == [True, False, False, True]


def test_kto_matches_trl(tmp_path):
    """The 4 pairs unpaired into 8 examples, one batch: trl's loss equals ours with z0 from trl's mismatching
    (prompt k with completion k-1 of the batch), and the test can fail: z0 = 0 gives another loss."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    tokenizer, policy, reference = _models()
    prompts = [p for p in PROMPTS for _ in range(2)]
    completions = [c for pair in zip(CHOSEN, REJECTED) for c in pair]
    labels = [True, False] * len(PROMPTS)
    args = trl.KTOConfig(output_dir=str(tmp_path), beta=0.3, per_device_train_batch_size=len(prompts),
                         train_sampling_strategy="sequential", max_length=MAX_LENGTH, use_cpu=True,
                         bf16=False,
                         gradient_checkpointing=False, report_to="none", dataloader_num_workers=0, seed=0)
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions, "label": labels})
    trainer = trl.KTOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=tokenizer)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 1
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batches[0])

    def logps(model, prompt_list, completion_list, eos):
        batch = encode_pairs(tokenizer, prompt_list, completion_list, max_length=MAX_LENGTH, append_eos=eos)
        return sequence_logprobs(model, batch)

    # find trl's EOS convention from its own batch: does a completion end with EOS?
    ends_with_eos = bool((batches[0]["input_ids"][0][batches[0]["attention_mask"][0].bool()][-1]
                          == tokenizer.eos_token_id).item())
    cycled = completions[-1:] + completions[:-1]
    with torch.no_grad():
        kl = kl_reference_point(logps(policy, prompts, cycled, ends_with_eos),
                                logps(reference, prompts, cycled, ends_with_eos))
        policy_logps = logps(policy, prompts, completions, ends_with_eos)
        reference_logps = logps(reference, prompts, completions, ends_with_eos)
    ours, _ = kto_loss(policy_logps, reference_logps, T(labels), kl, beta=0.3)
    assert_close(ours.mean(), trl_loss.float(), rtol=1e-5, atol=1e-6)
    without_kl, _ = kto_loss(policy_logps, reference_logps, T(labels), T(0.0), beta=0.3)
    assert kl.item() > 0.01 and (without_kl.mean() - trl_loss).abs() > 1e-4


def test_kto_recipe_trains_desirable_up_and_undesirable_down(tmp_path, tiny_overrides):
    """A short run of the bundled recipe on the tiny fixtures: the implicit reward of desirable completions
    ends above that of undesirable ones by more than after the first steps (both start at 0, pi = pi_ref;
    the tiny random model's pairs carry little signal), and every step is counted."""
    import json
    from pathlib import Path

    import alignkit
    from alignkit.recipe import load_recipe
    from alignkit.run.pipeline import run_recipe
    from alignkit.runlog import read_jsonl

    recipe_path = Path(alignkit.__file__).resolve().parent / "recipes" / "kto_imdb.yaml"
    steps = 30
    recipe = load_recipe(recipe_path, [*tiny_overrides, "kto.lr=0.005", f"kto.max_steps={steps}",
                                       "kto.batch_size=16", "kto.log_every=5"], ())
    run_recipe(recipe, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert summary["method"] == "kto" and summary["budget"]["steps"] == steps
    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "kto"]
    assert records[-1]["step"] == steps
    margins = [r["rewards/desirable"] - r["rewards/undesirable"] for r in records]
    assert margins[-1] > 0.05 and margins[-1] > margins[0]  # measured 0.065 -> 0.117
    assert all(r["kl"] >= 0 for r in records)
