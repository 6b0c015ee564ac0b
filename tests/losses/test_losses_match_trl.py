"""Each built-in preference loss equals trl's ``DPOTrainer`` loss for the same ``loss_type``.

What this proves: on one tiny random GPT-2 policy, a *differently seeded* tiny GPT-2 reference and one batch
of 4 preference pairs (completions of different lengths), alignkit's pipeline

    encode_pairs(..., append_eos=True) -> sequence_logprobs(policy / reference) -> LOSSES.get(name)(...)

gives the same mean loss (and the same implicit rewards) as ``DPOTrainer.compute_loss`` on the batch from
``DPOTrainer.get_train_dataloader()``, for sigmoid, hinge, ipo and robust. It also proves the two tokenize a
pair identically (trl appends the EOS token to each completion, adds no BOS with this tokenizer, and
right-pads ``[chosen..., rejected...]``), so the comparison covers sequence log-probs, masking and length
normalisation, not just the loss formulas. The models differ, so the log-ratios are far from zero and a
wrong sign, a missing term or a wrong length would change the loss (checked against the zero-margin value).

Everything is built in memory (no Hub): see ``tests/tiny.py``.
"""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_gpt2, tiny_tokenizer  # tests/tiny.py (pytest puts tests/ on sys.path)
from torch.testing import assert_close

from alignkit.losses import PreferenceLogps
from alignkit.models.sequences import concat_batches, encode_pairs, sequence_logprobs
from alignkit.registry import LOSSES

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")

BETA = 0.3
MAX_LENGTH = 64  # longer than every sequence below: neither side truncates

# Completions start with a space (as in trl's datasets) and have 1 to 8 words, chosen and rejected in either
# order of length, so ipo's per-token normalisation and the padding are both exercised.
PROMPTS = ["review :", "what did you think of it ?", "the movie", "i"]
CHOSEN = [" great", " i loved this story it was moving and brilliant", " was superb and the acting was great",
          " loved it"]
REJECTED = [" the film was boring and the plot was awful", " dull", " was awful", " hated this story"]


def _models():
    tokenizer = tiny_tokenizer()
    return tokenizer, tiny_gpt2(tokenizer, seed=0), tiny_gpt2(tokenizer, seed=1)


def _trl_trainer(tmp_path, loss_type: str, label_smoothing: float = 0.0):
    """A DPOTrainer over the 4 pairs, with a separate (differently seeded) reference model."""
    tokenizer, policy, reference = _models()
    args = trl.DPOConfig(
        output_dir=str(tmp_path), beta=BETA, loss_type=[loss_type], label_smoothing=label_smoothing,
        per_device_train_batch_size=len(PROMPTS), train_sampling_strategy="sequential", max_length=MAX_LENGTH,
        precompute_ref_log_probs=False, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to="none", dataloader_num_workers=0, seed=0,
    )
    dataset = datasets.Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    return trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                          processing_class=tokenizer)


def _trl_batch(trainer) -> dict:
    """The one training batch, through trl's own tokenization, collator and dataloader."""
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 1 and batches[0]["input_ids"].shape[0] == 2 * len(PROMPTS)  # nothing dropped
    return batches[0]


def _trl_loss(tmp_path, loss_type: str, label_smoothing: float = 0.0):
    """trl's loss for the whole dataset as one batch, and the metrics it logged for that batch."""
    trainer = _trl_trainer(tmp_path, loss_type, label_smoothing)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, _trl_batch(trainer))
    mode = "train" if trainer.model.training else "eval"
    return loss, {k: v[-1] for k, v in trainer._metrics[mode].items()}


def _our_logps() -> tuple[PreferenceLogps, object, object]:
    """alignkit's per-sequence log-probs for the same pairs, from its own tokenization."""
    tokenizer, policy, reference = _models()
    chosen = encode_pairs(tokenizer, PROMPTS, CHOSEN, max_length=MAX_LENGTH, append_eos=True)
    rejected = encode_pairs(tokenizer, PROMPTS, REJECTED, max_length=MAX_LENGTH, append_eos=True)
    with torch.no_grad():
        logps = PreferenceLogps(
            policy_chosen=sequence_logprobs(policy, chosen), policy_rejected=sequence_logprobs(policy,
                                                                                               rejected),
            reference_chosen=sequence_logprobs(reference, chosen),
            reference_rejected=sequence_logprobs(reference, rejected),
            chosen_lengths=chosen.completion_lengths, rejected_lengths=rejected.completion_lengths,
        )
    return logps, chosen, rejected


def test_tokenization_matches_trl(tmp_path):
    """trl's collated batch is exactly our chosen rows then our rejected rows (EOS appended, right-padded)."""
    trl_batch = _trl_batch(_trl_trainer(tmp_path, "sigmoid"))
    _, chosen, rejected = _our_logps()
    ours = concat_batches([chosen, rejected], pad_token_id=tiny_tokenizer().pad_token_id)
    assert torch.equal(ours.input_ids, trl_batch["input_ids"])
    assert torch.equal(ours.attention_mask, trl_batch["attention_mask"])
    assert torch.equal(ours.completion_mask, trl_batch["completion_mask"])
    eos = tiny_tokenizer().eos_token_id
    last = ours.attention_mask.sum(-1) - 1
    assert (ours.input_ids.gather(1, last[:, None]) == eos).all()  # every completion ends in EOS


@pytest.mark.parametrize(
    ("loss_type", "extra"),
    [("sigmoid", {"label_smoothing": 0.0}), ("hinge", {}), ("ipo", {}), ("robust", {"label_smoothing": 0.1})],
    ids=["sigmoid-ls0", "hinge", "ipo", "robust-ls0.1"],
)
def test_loss_matches_trl(tmp_path, loss_type, extra):
    trl_loss, metrics = _trl_loss(tmp_path, loss_type, **extra)
    logps, _, _ = _our_logps()
    loss_fn = LOSSES.get(loss_type)
    out = loss_fn(logps, beta=BETA, **extra)

    # The test can fail: the models differ, so every pair's loss is far from its value at zero log-ratios
    # (log 2 for sigmoid), and so is the mean, by orders of magnitude more than the tolerance below.
    zero = PreferenceLogps(logps.policy_chosen, logps.policy_rejected, logps.policy_chosen,
                           logps.policy_rejected, logps.chosen_lengths, logps.rejected_lengths)
    trivial = loss_fn(zero, beta=BETA, **extra).losses
    assert (out.losses - trivial).abs().min() > 0.05
    assert (out.losses.mean() - trivial.mean()).abs() > 1e-3

    assert_close(out.losses.mean(), trl_loss.to(out.losses.dtype), rtol=1e-5, atol=1e-6)
    # Implicit rewards beta * log(pi / pi_ref) agree too (trl logs their batch means).
    assert_close(out.chosen_rewards.mean().item(), metrics["rewards/chosen"], rtol=1e-5, atol=1e-6)
    assert_close(out.rejected_rewards.mean().item(), metrics["rewards/rejected"], rtol=1e-5, atol=1e-6)


def test_trl_sigmoid_has_no_label_smoothing(tmp_path):
    """Known difference, pinned so that it stays visible: trl 1.16's "sigmoid" ignores ``label_smoothing``
    (its docs list it for robust and EXO only), while alignkit's sigmoid with ``label_smoothing=eps > 0`` is
    conservative DPO, ``-(1-eps) log sig(beta m) - eps log sig(-beta m)``, which has no trl counterpart.
    Only ``label_smoothing=0`` is comparable, and there the two agree (checked above and here)."""
    trl_loss, _ = _trl_loss(tmp_path, "sigmoid", label_smoothing=0.1)
    logps, _, _ = _our_logps()
    ours_plain = LOSSES.get("sigmoid")(logps, beta=BETA, label_smoothing=0.0).losses.mean()
    assert_close(ours_plain, trl_loss.to(ours_plain.dtype), rtol=1e-5, atol=1e-6)
