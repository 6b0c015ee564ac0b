"""The losses named after trl's other ``loss_type`` values equal trl 1.16's ``DPOTrainer`` loss for that type.

Same harness as ``tests/losses/test_losses_match_trl.py`` (whose helpers and batch this file reuses): a tiny
random
GPT-2 policy, a differently seeded tiny GPT-2 reference, 4 pairs of different lengths, alignkit's
``encode_pairs -> sequence_logprobs -> LOSSES.get(name)`` against ``DPOTrainer.compute_loss`` on the batch
from
trl's own dataloader. Each type is checked at trl's defaults (for ``exo_pair``, whose trl default
``label_smoothing=0`` trl rejects, at the paper's 1e-3, alignkit's default), and the ones with a parameter
also at a non-default value. With the four of ``tests/losses/test_losses_match_trl.py`` this covers all 15 of
trl
1.16's loss types.
"""

from __future__ import annotations

import pytest
import torch
from test_losses_match_trl import BETA, CHOSEN, MAX_LENGTH, PROMPTS, REJECTED, _models, _our_logps, _trl_batch
from torch.testing import assert_close

from alignkit.losses import PreferenceLogps
from alignkit.losses.base import contract_problem
from alignkit.registry import LOSSES

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")

NEW_LOSSES = ["exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down",
              "discopop", "sft", "sigmoid_norm"]

# (trl loss_type, DPOConfig overrides, alignkit loss_params); {} / {} is both sides' defaults
CASES = [
    ("exo_pair", {"label_smoothing": 1e-3}, {}),
    ("exo_pair", {"label_smoothing": 0.2}, {"label_smoothing": 0.2}),
    ("nca_pair", {}, {}),
    ("bco_pair", {}, {}),
    ("sppo_hard", {}, {}),
    ("aot", {}, {}),
    ("aot", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    ("aot_unpaired", {}, {}),
    ("aot_unpaired", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    ("apo_zero", {}, {}),
    ("apo_down", {}, {}),
    ("discopop", {}, {}),
    ("discopop", {"discopop_tau": 0.5}, {"tau": 0.5}),
    ("sft", {}, {}),
    ("sigmoid_norm", {}, {}),
]


def _trl_loss(tmp_path, loss_type: str, **config):
    """trl's mean loss for the 4 pairs as one batch, and the metrics it logged for that batch."""
    tokenizer, policy, reference = _models()
    args = trl.DPOConfig(
        output_dir=str(tmp_path), beta=BETA, loss_type=[loss_type],
        per_device_train_batch_size=len(PROMPTS), train_sampling_strategy="sequential", max_length=MAX_LENGTH,
        precompute_ref_log_probs=False, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to="none", dataloader_num_workers=0, seed=0, **config,
    )
    dataset = datasets.Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=tokenizer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, _trl_batch(trainer))
    mode = "train" if trainer.model.training else "eval"
    return loss, {k: v[-1] for k, v in trainer._metrics[mode].items()}


@pytest.fixture(scope="module")
def logps() -> PreferenceLogps:
    return _our_logps()[0]


@pytest.mark.parametrize(("loss_type", "config", "params"), CASES,
                         ids=[f"{t}-{'-'.join(f'{k}{v}' for k, v in p.items()) or 'default'}" for t, _,
                              p in CASES])
def test_loss_matches_trl(tmp_path, logps, loss_type, config, params):
    trl_loss, metrics = _trl_loss(tmp_path, loss_type, **config)
    loss_fn = LOSSES.get(loss_type)
    out = loss_fn(logps, beta=BETA, **params)
    assert out.losses.shape == (len(PROMPTS),)

    # The test can fail: the models differ, so the mean loss is far from its value when pi = pi_ref, by
    # more than 10x the tolerance below (sft ignores the reference; its own sensitivity check is below).
    if loss_type != "sft":
        zero = PreferenceLogps(logps.policy_chosen, logps.policy_rejected, logps.policy_chosen,
                               logps.policy_rejected, logps.chosen_lengths, logps.rejected_lengths)
        trivial = loss_fn(zero, beta=BETA, **params).losses
        assert (out.losses.mean() - trivial.mean()).abs() > 1e-4

    assert_close(out.losses.mean(), trl_loss.to(out.losses.dtype), rtol=1e-5, atol=1e-6)
    assert_close(out.chosen_rewards.mean().item(), metrics["rewards/chosen"], rtol=1e-5, atol=1e-6)
    assert_close(out.rejected_rewards.mean().item(), metrics["rewards/rejected"], rtol=1e-5, atol=1e-6)


def test_sft_is_a_per_token_batch_mean(logps):
    """On this batch sft's per-token batch mean differs from a per-sequence mean, so the trl comparison above
    would catch that mistake; every pair carries the same (batch) loss."""
    out = LOSSES.get("sft")(logps, beta=BETA)
    per_sequence = -(logps.policy_chosen / logps.chosen_lengths).mean()
    assert (out.losses.mean() - per_sequence).abs() > 1e-3
    assert_close(out.losses, (-logps.policy_chosen.sum() / logps.chosen_lengths.sum()).expand(len(PROMPTS)))


def _aot_hand(margins_a, margins_b, beta, eps):
    """(1-eps) * -log sig(beta d) + eps * -log sig(-beta d), d = sorted(a) - sorted(b), by hand."""
    import math

    d = [x - y for x, y in zip(sorted(margins_a), sorted(margins_b))]
    return [
        -(1 - eps) * math.log(1 / (1 + math.exp(-beta * v))) - eps * math.log(1 / (1 + math.exp(beta * v)))
        for v in d
    ]


def test_aot_sorts_across_the_batch():
    """On the trl batch above the policy and reference margins happen to be in the same order, so sorting
    changes nothing there; this batch has them in different orders, against a hand-computed value."""
    pc, pr = [-1.0, -4.0, -2.0], [-3.0, -1.0, -2.5]
    rc, rr = [-2.0, -1.5, -3.0], [-1.0, -2.0, -2.2]
    t = torch.tensor
    logps = PreferenceLogps(t(pc), t(pr), t(rc), t(rr), t([2, 3, 4]), t([3, 2, 4]))
    beta, eps = 0.7, 0.1
    policy_margin = [c - r for c, r in zip(pc, pr)]  # [2, -3, 0.5]
    ref_margin = [c - r for c, r in zip(rc, rr)]  # [-1, 0.5, -0.8]
    out = LOSSES.get("aot")(logps, beta=beta, label_smoothing=eps)
    assert_close(out.losses, t(_aot_hand(policy_margin, ref_margin, beta, eps)))
    assert abs(out.losses[0].item() - _aot_hand([2.0], [-1.0], beta, eps)[0]) > 0.1  # sorting matters here
    chosen_ratio = [p - r for p, r in zip(pc, rc)]  # [1, -2.5, 1]
    rejected_ratio = [p - r for p, r in zip(pr, rr)]  # [-2, 1, -0.3]
    out = LOSSES.get("aot_unpaired")(logps, beta=beta, label_smoothing=eps)
    assert_close(out.losses, t(_aot_hand(chosen_ratio, rejected_ratio, beta, eps)))
    unsorted = _aot_hand([1.0], [-2.0], beta, eps)[0]  # pair 0 without sorting: not what it computes
    assert abs(out.losses[0].item() - unsorted) > 0.1
    assert_close(out.chosen_rewards, beta * t(chosen_ratio))  # rewards stay per pair, unsorted


def test_bco_pair_reward_shift():
    """reward_shift is the paper's delta: it moves both rewards, and 0 is trl 1.16's form."""
    logps = PreferenceLogps(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                            torch.tensor([-2.5]), torch.tensor([2]), torch.tensor([3]))
    bco = LOSSES.get("bco_pair")
    beta, delta = 0.5, 0.2
    r_c, r_r = beta * 1.0, beta * -0.5
    sig = torch.sigmoid
    expected = -torch.log(sig(torch.tensor(r_c - delta))) - torch.log(sig(torch.tensor(-(r_r - delta))))
    assert_close(bco(logps, beta=beta, reward_shift=delta).losses[0], expected)
    expected0 = -torch.log(sig(torch.tensor(r_c))) - torch.log(sig(torch.tensor(-r_r)))
    assert_close(bco(logps, beta=beta).losses[0], expected0)


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_contract_at_defaults(name):
    """Each loss keeps the loss contract (shape [B], finite, differentiable), with and without a reference."""
    assert contract_problem(LOSSES.get(name), 0.1, {}) is None


def test_exo_pair_rejects_zero_label_smoothing():
    assert "label_smoothing" in contract_problem(LOSSES.get("exo_pair"), 0.1, {"label_smoothing": 0.0})


def test_sigmoid_norm_normalises_by_length(logps):
    """Per-token normalisation matters on this batch (plain sigmoid gives another mean)."""
    norm = LOSSES.get("sigmoid_norm")(logps, beta=BETA).losses.mean()
    plain = LOSSES.get("sigmoid")(logps, beta=BETA).losses.mean()
    assert (norm - plain).abs() > 1e-3  # 100x the comparison's tolerance
