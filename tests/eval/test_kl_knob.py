"""Each method's KL knob (alignkit.eval.kl_knob): the setting declared where the method registers, the rule
for the value past a sweep, and the verdict that names the setting it would add."""

from __future__ import annotations

import numpy as np

from alignkit.eval.kl_knob import GroupRun, KLKnob, knob_of, next_setting
from alignkit.eval.matched_kl import Setting, matched_kl
from alignkit.eval.verdict import Run, decide
from alignkit.registry import load_builtins

load_builtins()


def test_each_method_declares_its_knob_or_none():
    dpo = {"loss": "sigmoid", "reference_free": False}
    assert knob_of("dpo", dpo) == KLKnob("beta", rises=False)
    assert knob_of("dpo", {**dpo, "loss": "ipo"}) == KLKnob("beta", rises=False)
    assert knob_of("dpo", {**dpo, "loss": "simpo"}) is None  # no pi_ref: beta holds nothing to it
    assert knob_of("dpo", {**dpo, "reference_free": True}) is None
    assert knob_of("dpo", {**dpo, "loss": "a_plugin_not_loaded"}) == KLKnob("beta", rises=False)
    assert knob_of("kto", {}) == KLKnob("beta", rises=False)
    assert knob_of("ppo", {"target_kl": 6.0, "kl_coef": 0.1}) == KLKnob("target_kl", rises=True, nats=True)
    assert knob_of("ppo", {"target_kl": None, "kl_coef": 0.1}) == KLKnob("kl_coef", rises=False)
    assert knob_of("grpo", {}) == knob_of("rloo", {}) == KLKnob("kl_coef", rises=False)
    assert knob_of("best_of_n", {}) == KLKnob("n", rises=True, integer=True)
    assert [knob_of(m, {}) for m in ("sft", "preferred_ft", "unlikelihood")] == [None, None, None]


def test_the_new_value_reaches_past_the_extreme_of_the_sweep():
    beta, target = KLKnob("beta", rises=False), KLKnob("target_kl", rises=True, nats=True)
    assert beta.beyond([0.05, 0.1, 1, 5], needed=9.0, reached=8.8) == 0.025
    assert target.beyond([3, 6, 9, 12], needed=12.4, reached=12.1) == 15  # at least the sweep's top step
    assert target.beyond([3, 6, 9, 12], needed=20.0, reached=12.0) == 20  # or the KL still missing
    assert target.beyond([6], needed=6.2, reached=6.0) == 12  # one value: its own size is the step
    assert KLKnob("n", rises=True, integer=True).beyond([2, 4, 16], 3.0, 2.0) == 32
    assert KLKnob("kl_coef", rises=False).beyond([0.0, 0.1], 5.0, 4.0) is None  # nothing below 0


def test_the_setting_starts_from_the_highest_kl_run():
    section = {"loss": "sigmoid", "reference_free": False}
    runs = [GroupRun("dpo", {**section, "beta": b}, {"dpo.beta": b, "dpo.lr": lr}, kl)
            for b, lr, kl in [(0.1, 1e-3, 6.0), (0.05, 1e-3, 7.5), (0.05, 5e-4, 8.2), (1.0, 1e-3, 2.0)]]
    phrase, setting = next_setting("dpo", runs, needed=9.0)
    assert phrase == "a dpo setting at beta 0.025"
    assert setting == {"group": "dpo", "key": "dpo.beta", "value": 0.025, "kl": 9.0,
                       "from": {"dpo.beta": 0.05, "dpo.lr": 5e-4}}
    assert next_setting("sft", [GroupRun("sft", {}, {}, 0.4)], 9.0) == ("sft has no KL setting to add", None)


def short_side():
    """dpo's points end at 4 nats, below ppo's 5.5, and ppo leads there: only dpo's side is unbounded."""
    rng = np.random.default_rng(0)
    dpo = Setting(0.70 + rng.normal(0, 0.01, (3, 64)), np.full((3, 64), 4.0))
    ppo = Setting(0.75 + rng.normal(0, 0.01, (3, 64)), np.full((3, 64), 5.5))
    return matched_kl([dpo], [ppo])


def test_the_verdict_names_the_setting_it_would_add():
    result = short_side()
    assert result.difference < 0 and not np.isfinite(result.ci_high)
    section = {"loss": "sigmoid", "reference_free": False, "beta": 0.1}
    runs = {"dpo": [GroupRun("dpo", section, {}, 4.0)], "sft": [GroupRun("sft", {}, {}, 4.0)]}
    facts = [Run("dpo", "dpo", "converged", 4.0), Run("ppo", "ppo", "converged", 5.5)]
    verdict = decide("dpo", "ppo", result, facts, setting_for=lambda g, kl: next_setting(g, runs[g], kl))
    assert verdict.kind == "inconclusive"
    assert verdict.would_take.startswith("a dpo setting at beta 0.05 (points of dpo at 5.5 nats or above: ")
    assert verdict.needs == {"setting": {"group": "dpo", "key": "dpo.beta", "value": 0.05, "kl": 5.5,
                                         "from": {}}}
    plain = decide("sft", "ppo", result, facts, setting_for=lambda g, kl: next_setting(g, runs[g], kl))
    assert plain.would_take.endswith("; sft has no KL setting to add)")
    assert plain.needs == {"points": "sft", "no_setting": "sft has no KL setting to add"}
