"""The evaluation summary's type (alignkit.eval.summary): the file's layout kept key for key, in order, with
keys it does not name carried through."""

from __future__ import annotations

import json

from alignkit.eval.summary import EvalSummary

POLICY = {"method": "dpo", "name": "dpo_imdb", "temperature": 1.0, "n_samples": 4, "gold_reward_mean": 0.6,
          "kl_kind": "exact", "kl_mean": 1.5, "win_rate_vs_reference": 0.5, "a_future_number": 7,
          "judge": "gold", "judge_kind": "score", "judge_agreement": {"accuracy": 0.9}, "self_judged": True,
          "by_temperature": [{"temperature": 1.0, "gold_reward_mean": 0.6}], "budget": {"steps": 3},
          "training_data": {}}
REWARD_MODEL = {"method": "reward_model", "heldout_pairwise_accuracy": 0.5, "n_train_pairs": 43,
                "budget": {"steps": 4}}


def test_a_summary_round_trips_key_for_key_in_order(tmp_path):
    for data in (POLICY, REWARD_MODEL):
        summary = EvalSummary.from_dict(data)
        assert list(summary.to_dict().items()) == list(data.items())
        summary.write(tmp_path)
        assert (tmp_path / "eval" / "summary.json").read_text() == json.dumps(data, indent=2) + "\n"


def test_named_numbers_and_the_rest():
    policy, model = EvalSummary.from_dict(POLICY), EvalSummary.from_dict(REWARD_MODEL)
    assert (policy.gold_reward_mean, policy.kl_mean, policy.win_rate_vs_reference, policy.steps) == (0.6, 1.5,
                                                                                                     0.5, 3)
    assert policy.results["a_future_number"] == 7 and policy.is_policy and policy.training_data == {}
    assert not model.is_policy and model.gold_reward_mean is None and model.results["n_train_pairs"] == 43
    assert "name" not in model.to_dict() and "training_data" not in model.to_dict()  # None: absent
