"""SimPO and ORPO: reference-free preference losses, checked against their papers' formulas by hand and
against trl 1.16's experimental ``CPOTrainer`` (``loss_type='simpo'``) and ``ORPOTrainer`` on the batch of
``tests/losses/test_losses_match_trl.py`` (trl's own tokenization, collator and forward pass). Also the
example
plugin's DPO-Positive formula, and that a reference-free loss makes DPO skip the reference pass."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses_match_trl import BETA, CHOSEN, MAX_LENGTH, PROMPTS, REJECTED, _models, _our_logps
from torch.testing import assert_close

from alignkit.losses import PreferenceLogps
from alignkit.losses.base import contract_problem
from alignkit.registry import LOSSES

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")

T = torch.tensor


def _hand_batch() -> PreferenceLogps:
    """Two pairs with different lengths and a reference that differs from the policy (which must
    not matter)."""
    return PreferenceLogps(T([-6.0, -2.0]), T([-6.0, -9.0]), T([-1.0, -1.0]), T([-20.0, -3.0]),
                           T([3, 2]), T([2, 6]))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_simpo_formula_by_hand():
    """-log sig(beta * (lp_c/|y_c| - lp_r/|y_r|) - gamma), no reference: pair 0 has avg -2 vs -3."""
    beta, gamma = 2.0, 0.5
    out = LOSSES.get("simpo")(_hand_batch(), beta=beta, gamma=gamma)
    expected = [-math.log(_sig(beta * (-6 / 3 - -6 / 2) - gamma)),
                -math.log(_sig(beta * (-2 / 2 - -9 / 6) - gamma))]
    assert_close(out.losses, T(expected))
    assert_close(out.chosen_rewards, T([beta * -2.0, beta * -1.0]))  # beta * mean log-prob
    smoothed = LOSSES.get("simpo")(_hand_batch(), beta=beta, gamma=gamma, label_smoothing=0.2).losses[0]
    z = beta * 1.0 - gamma
    assert_close(smoothed, T(-0.8 * math.log(_sig(z)) - 0.2 * math.log(_sig(-z))))


def test_orpo_formula_by_hand():
    """-lp_c/|y_c| - lambda * log sig(log odds_c - log odds_r), odds = p / (1 - p), p = exp(mean log-prob)."""
    lam = 0.25
    out = LOSSES.get("orpo")(_hand_batch(), beta=lam)
    expected = []
    for (lc, nc), (lr, nr) in [((-6, 3), (-6, 2)), ((-2, 2), (-9, 6))]:
        pc, pr = math.exp(lc / nc), math.exp(lr / nr)
        odds_ratio = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
        expected.append(-lc / nc - lam * math.log(_sig(odds_ratio)))
    assert_close(out.losses, T(expected))


@pytest.mark.parametrize("name", ["simpo", "orpo"])
def test_reference_free_losses_ignore_the_reference(name):
    batch = _hand_batch()
    without = PreferenceLogps(batch.policy_chosen, batch.policy_rejected, None, None, batch.chosen_lengths,
                              batch.rejected_lengths)
    assert_close(LOSSES.get(name)(batch, beta=0.5).losses, LOSSES.get(name)(without, beta=0.5).losses)
    assert LOSSES.entry(name).meta["uses_reference"] is False
    assert contract_problem(LOSSES.get(name), 0.5, {}) is None


def _trl_batch_metrics(trainer_cls, config_cls, tmp_path, **config):
    """trl's loss and metrics for the 4 pairs as one batch, through trl's own data pipeline."""
    tokenizer, policy, _ = _models()
    args = config_cls(output_dir=str(tmp_path), beta=BETA, per_device_train_batch_size=len(PROMPTS),
                      max_length=MAX_LENGTH, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to="none", dataloader_num_workers=0, seed=0, **config)
    dataset = datasets.Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    trainer = trainer_cls(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer)
    loader = torch.utils.data.DataLoader(trainer.train_dataset, batch_size=len(PROMPTS),
                                         collate_fn=trainer.data_collator, shuffle=False)
    batch = next(iter(loader))
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch)
    return float(loss), metrics


@pytest.mark.parametrize("gamma", [0.5, 1.3])
def test_simpo_matches_trl_cpo(tmp_path, gamma):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    trl_loss, metrics = _trl_batch_metrics(CPOTrainer, CPOConfig, tmp_path, loss_type="simpo", cpo_alpha=0.0,
                                           simpo_gamma=gamma)
    out = LOSSES.get("simpo")(_our_logps()[0], beta=BETA, gamma=gamma)
    assert_close(out.losses.mean().item(), trl_loss, rtol=1e-5, atol=1e-6)
    assert_close(out.chosen_rewards.mean().item(), metrics["rewards/chosen"], rtol=1e-5, atol=1e-6)
    assert_close(out.rejected_rewards.mean().item(), metrics["rewards/rejected"], rtol=1e-5, atol=1e-6)


def test_orpo_matches_trl_orpo(tmp_path):
    """trl's ORPO loss is NLL - mean odds-ratio term, with the NLL averaged over all chosen tokens of the
    batch; ours averages it per completion (the paper's L_SFT). The odds-ratio terms are equal, and trl's NLL
    is our per-token batch mean, so the difference is exactly the NLL reduction (which this batch exposes)."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    trl_loss, metrics = _trl_batch_metrics(ORPOTrainer, ORPOConfig, tmp_path)
    logps = _our_logps()[0]
    out = LOSSES.get("orpo")(logps, beta=BETA)
    per_completion_nll = -logps.policy_chosen / logps.chosen_lengths
    odds_term = (out.losses - per_completion_nll).mean()
    assert_close(odds_term.item(), trl_loss - float(metrics["nll_loss"]), rtol=1e-5, atol=1e-6)
    assert abs(per_completion_nll.mean().item() - float(metrics["nll_loss"])) > 1e-2
    assert_close(out.chosen_rewards.mean().item(), metrics["rewards/chosen"], rtol=1e-5, atol=1e-6)


def test_dpo_positive_plugin_formula():
    """The example plugin: DPO's margin minus lam * max(0, -log-ratio of the chosen completion)."""
    from alignkit.registry import load_plugins

    load_plugins()
    batch = _hand_batch()  # chosen log-ratios: -5 (lost likelihood), -1
    beta, lam = 0.1, 2.0
    out = LOSSES.get("dpop")(batch, beta=beta, lam=lam)
    margins = [(-5.0) - (14.0), (-1.0) - (-6.0)]
    expected = [-math.log(_sig(beta * (m - lam * max(0.0, -c)))) for m, c in zip(margins, [-5.0, -1.0])]
    assert_close(out.losses, T(expected))
    plain = LOSSES.get("sigmoid")(batch, beta=beta).losses
    assert (out.losses > plain).all()  # both chosen completions lost likelihood: both are penalised


def test_dpo_skips_the_reference_pass_for_reference_free_losses():
    from alignkit.methods.dpo import DPOConfig, _needs

    assert "reference_logps" in _needs(DPOConfig(loss="sigmoid"))
    assert "reference_logps" not in _needs(DPOConfig(loss="simpo"))
    assert "reference_logps" not in _needs(DPOConfig(loss="orpo"))
    assert "reference_logps" not in _needs(DPOConfig(loss="sigmoid", reference_free=True))
