"""The policy layer (alignkit.models.policy) and its typed seam with the evaluator: a policy that estimates
its
own KL (Best-of-N's kind) is recognised by its type, and sampling takes the runtime it shares work with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import cpu_runtime, tiny_gpt2, tiny_tokenizer

from alignkit.eval.evaluator import EvalConfig, ReferenceSamples, evaluate_at
from alignkit.models.policy import KLEstimatingPolicy, Policy, Reference

PROMPTS = ["the movie", "i hated this story", "a wonderful cast", "review :"]


def _policy(cls=Policy) -> Policy:
    tok = tiny_tokenizer()
    return cls(tiny_gpt2(tok, seed=0), tok, torch.device("cpu"))


class ConstantKL(KLEstimatingPolicy):
    """Samples like its model; claims a KL of 0.5 nats per sample and reports 2.0 as its analytic KL."""

    def sequence_kl(self, reference, rollout, runtime):
        return np.full(len(rollout.prompts), 0.5)

    def summarize_kl(self, row: dict) -> None:
        row.update(kl_estimate=row["kl_mean"], kl_mean=2.0, kl_kind="analytic")


def _evaluate(policy: Policy) -> dict:
    samples = ReferenceSamples(PROMPTS, ["x"] * 4, [False] * 4, np.zeros(4))
    gold = lambda prompts, completions: np.array([float(len(c)) for c in completions])  # noqa: E731
    row, _ = evaluate_at(policy, Reference(policy), samples, gold, EvalConfig(max_new_tokens=4,
                                                                              diversity=False),
                         temperature=1.0, seed=0, runtime=cpu_runtime())
    return row


def test_the_evaluator_asks_a_kl_estimating_policy_for_its_own_kl():
    row = _evaluate(_policy(ConstantKL))
    assert row["kl_estimate"] == pytest.approx(0.5) and row["kl_mean"] == 2.0 and row["kl_kind"] == "analytic"
    plain = _evaluate(_policy())
    # itself as reference
    assert plain["kl_kind"] == "exact" and plain["kl_mean"] == pytest.approx(0.0, abs=1e-6)


def test_the_base_kl_capability_must_be_implemented():
    policy = _policy(KLEstimatingPolicy)
    with pytest.raises(NotImplementedError):
        policy.sequence_kl(Reference(policy), None, cpu_runtime())


def test_sampling_draws_the_same_whatever_the_chunking():
    policy = _policy()
    torch.manual_seed(3)
    whole = policy.sample(PROMPTS * 2, max_new_tokens=5, runtime=cpu_runtime(), batch_size=8)
    torch.manual_seed(3)
    again = policy.sample(PROMPTS * 2, max_new_tokens=5, runtime=cpu_runtime(), batch_size=8)
    assert whole.completions == again.completions and len(whole.completions) == 8
