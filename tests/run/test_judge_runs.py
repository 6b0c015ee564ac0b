"""Judges in runs: the heldout-reward-model judge's own split of the pairs and cached reward model, the
judge's agreement with held-out pairs in eval/summary.json and the report, a pairwise judge through
``alignkit eval`` and ``alignkit report``, and the refusal to judge a method with the model it optimised."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import make_workspace

from alignkit.cli import main
from alignkit.config import ConfigError, fingerprint
from alignkit.data.preferences import PreferenceData
from alignkit.errors import AlignkitError
from alignkit.eval.judges import PairwiseJudge
from alignkit.methods.reward_model import fit_reward_model
from alignkit.recipe import load_recipe
from alignkit.registry import METHODS, register_reward
from alignkit.report.markdown import _caveats

WORDS = ["great", "awful", "superb", "boring", "brilliant", "dull", "wonderful", "dreadful"]
PAIRS = PreferenceData(prompts=[f"the movie number {g} was" for g in range(40)],
                       chosen=[f" {WORDS[2 * (g % 4)]} and fun" for g in range(40)],
                       rejected=[f" {WORDS[2 * (g % 4) + 1]} and slow" for g in range(40)],
                       group=list(range(40)))


class AlwaysFirst(PairwiseJudge):
    """Answers "A" whatever it is shown: pure position bias, so every verdict flips with the order."""

    def ask(self, questions):
        return ["A"] * len(questions)


@register_reward("test-always-first", pairwise=True)
def always_first(workspace):
    """Test judge: always the first response shown."""
    return AlwaysFirst("test-always-first", "test-always-first", cache_dir=None)


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_heldout_reward_model_trains_on_a_judge_split_no_method_sees(tmp_path, tiny_overrides, monkeypatch):
    overrides = [*tiny_overrides, "device=cpu", "reward_model.max_steps=2", "eval.judge_fraction=0.25"]
    recipe = load_recipe("dpo_imdb", [*overrides, "eval.judge=heldout-reward-model"])
    ws = make_workspace(recipe, cache_dir=tmp_path / "cache").provide(preferences=PAIRS)
    train, heldout, judge = set(ws.train_pairs.group), set(ws.heldout_pairs.group), set(ws.judge_pairs.group)
    # carved first, then the usual split of the rest
    assert (len(judge), len(heldout), len(train)) == (10, 3, 27)
    assert not (judge & train) and not (judge & heldout) and not (train & heldout)

    fits = []
    meta = METHODS.entry("reward_model").meta
    monkeypatch.setitem(meta, "fit_on", lambda ws, cfg, pairs, held: fits.append(len(pairs)) or
                        fit_reward_model(ws, cfg, pairs, held))
    scores = ws.judge(PAIRS.prompts[:3], PAIRS.chosen[:3], [True] * 3)
    assert np.asarray(scores).shape == (3,) and fits == [10]  # trained on the judge split only
    assert ws.artifact_keys["judge_reward_model"] == ws.keys.judge_reward_model_key()
    assert (tmp_path / "cache" / "judge_reward_models" / ws.keys.judge_reward_model_key()).is_dir()
    agreement = ws.judge_agreement()
    assert agreement["judge"] == "heldout-reward-model" and agreement["n_pairs"] == 3
    assert 0 <= agreement["agreement"] <= 1
    assert ws.keys.judge_reward_model_key() != ws.keys.reward_model_key()  # not the proxy PPO optimises

    again = make_workspace(recipe, cache_dir=tmp_path / "cache").provide(preferences=PAIRS)
    again.judge(PAIRS.prompts[:1], PAIRS.chosen[:1], [True])
    assert fits == [10]  # cached: not trained again

    gold = make_workspace(load_recipe("dpo_imdb", overrides),
                          cache_dir=tmp_path / "cache").provide(preferences=PAIRS)
    # no judge split under another judge: the split (and its key) as before
    assert len(gold.train_pairs) == 36
    assert gold.keys.split_key() == fingerprint(gold.keys.pairs_key(), recipe.preferences.heldout_fraction)
    assert "judge_reward_model" not in gold.stage_keys()
    with pytest.raises(AlignkitError, match="no judge split"):
        _ = gold.judge_pairs


REFUSAL = ("eval.judge: reward-model is the reward model that ppo optimises, so it would grade ppo by its "
           "own objective; judge with a model it did not optimise (eval.judge: gold, heldout-reward-model, "
           "llm-judge, endpoint-judge) or set eval.allow_self_judging=true to report it with that caveat")


@pytest.mark.parametrize("command", ["run", "compare"])
def test_self_judging_is_refused_in_one_line_and_writes_nothing(command, tmp_path, tiny_overrides, cache_dir):
    before = sorted(cache_dir.rglob("*"))
    entry = ["ppo_imdb"] if command == "run" else ["ppo", "dpo"]
    result = CliRunner().invoke(main, [command, *entry, "--out", str(tmp_path / "out"),
                                       *sets([*tiny_overrides, "eval.judge=reward-model"])])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignkit: error: ") and lines[0].endswith(REFUSAL), lines
    assert not (tmp_path / "out").exists() and sorted(cache_dir.rglob("*")) == before


def test_which_methods_self_judging_refuses():
    for method, extra in [("best_of_n_imdb", []), ("grpo_imdb", []), ("ppo_imdb",
                                                                      ["ppo.reward_model_4bit=true",
                                                                       "ppo.value_init=policy"])]:
        with pytest.raises(ConfigError, match="is the reward model that .* optimises"):
            load_recipe(method, ["eval.judge=reward-model", *extra])
    with pytest.raises(ConfigError,
                       match=r"gold_reward: reward-model is the reward model that ppo optimises"):
        load_recipe("ppo_imdb", ["gold_reward=reward-model"])
    load_recipe("dpo_imdb", ["eval.judge=reward-model"])  # DPO never optimised the reward model
    # PPO-GT neither
    load_recipe("ppo_imdb", ["eval.judge=reward-model", "ppo.reward=gold", "ppo.value_init=policy"])
    load_recipe("ppo_imdb", ["eval.judge=heldout-reward-model"])
    assert load_recipe("ppo_imdb", ["eval.judge=reward-model",
                                    "eval.allow_self_judging=true"]).eval.allow_self_judging


def test_judge_options_are_validated_at_load(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="judge 'gold' takes no options"):
        load_recipe("dpo_imdb", ["eval.judge_options={model: x}"])
    with pytest.raises(ConfigError, match="eval.judge_options.model"):
        load_recipe("dpo_imdb", ["eval.judge=llm-judge"])
    with pytest.raises(ConfigError, match="must contain"):
        load_recipe("dpo_imdb", ["eval.judge=llm-judge",
                                 "eval.judge_options={model: x, template: 'no fields'}"])
    recipe = load_recipe("dpo_imdb", ["eval.judge=llm-judge", "eval.judge_options={model: x}"])
    # defaults filled in: the same judge reads the same
    assert recipe.eval.judge_options["max_new_tokens"] == 8
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_JUDGE_KEY holding the API key is not set"):
        load_recipe("dpo_imdb", ["eval.judge=endpoint-judge",
                                 "eval.judge_options={base_url: 'http://127.0.0.1:9/v1', "
                                 "model: m, api_key_env: NO_SUCH_JUDGE_KEY}"])
    with pytest.raises(ConfigError, match="pairwise judge"):
        load_recipe("dpo_imdb", ["gold_reward=test-always-first"])


def test_agreement_is_recorded_and_a_pairwise_judge_decides_win_rates(tmp_path, tiny_overrides):
    run = tmp_path / "dpo"
    result = CliRunner().invoke(main, ["run", "dpo_imdb", "--out", str(run),
                                       *sets([*tiny_overrides, "dpo.max_steps=2", "eval.every_steps=0"])])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["judge_kind"] == "score"
    found = summary["judge_agreement"]
    # the generated pairs are ranked by the gold reward, without ties: the gold judge agrees with all of them
    assert (
        found["judge"] == "gold" and found["agreement"] == 1.0 and found["ties"] == 0 and found["n_pairs"] > 0
    )
    # a score judge's verdicts get a length-controlled rate too; it has no order to be biased by
    assert 0 <= summary["lc_win_rate_ci_low"] <= summary["lc_win_rate"] <= summary["lc_win_rate_ci_high"] <= 1
    assert "judge_position_bias" not in summary

    result = CliRunner().invoke(main, ["eval", str(run), "--judge", "heldout-reward-model"])
    assert (
        result.exit_code == 1
        and "trains on a judge split of the pairs this run learned from" in result.output
    )

    result = CliRunner().invoke(main, ["eval", str(run), "--judge", "test-always-first"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "summary.json").read_text())
    n = summary["n_samples"]
    assert summary["judge_kind"] == "pairwise" and summary["win_rate_vs_reference"] == 0.5
    assert summary["judge_ties"] == n and summary["judge_order_disagreements"] == n
    # it always names the reply shown first: every verdict flips with the order, and all-ties is 0.5 at any
    # length
    assert summary["judge_position_bias"] == 1.0
    assert abs(summary["lc_win_rate"] - 0.5) < 1e-9 and abs(summary["lc_length_slope"]) < 1e-9
    assert (
        summary["judge_agreement"]["agreement"] == 0.5
        and summary["judge_agreement"]["order_disagreements"] > 0
    )
    samples = [json.loads(x) for x in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert all(s["judge_preference"] == 0.5 and "judge_score" not in s for s in samples)

    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert (
        "Win rates are decided by `test-always-first`: it prefers the chosen completion of 0.500 of" in report
    )
    assert "Not computed for a pairwise judge" in report
    assert "## Win rates controlled for length" in report
    assert any(
        "| 0.500 [0.50, 0.50] | 0.00 |" in line and line.endswith("| 1.000 |") for line in report.splitlines()
    )
    table = pd.read_csv(tmp_path / "report" / "comparison.csv")
    # each temperature
    assert set(table["judge_position_bias"]) == {1.0} and set(table["lc_win_rate"]) == {0.5}


def test_the_report_says_self_judged_entries_were_graded_by_their_own_objective():
    shared = {"self_judged": ["ppo"], "reward_model": {"heldout_pairwise_accuracy": 0.7}}
    index = {"entries": [{"label": "ppo", "convergence": {"label": "converged"}, "train_seed": 0,
                          "budget": {"steps": 3}}]}
    lines = _caveats([], pd.DataFrame({"kl_kind": ["exact"]}), shared, index)
    text = "\n".join(lines)
    assert "Self-judged (eval.allow_self_judging: true): ppo were judged by the very reward model" in text
    assert "over-optimisation cannot be seen" in text and "a proxy column rising" not in text
    plain = "\n".join(_caveats([], pd.DataFrame({"kl_kind": ["exact"]}),
                               {"reward_model": shared["reward_model"]},
                               index))
    assert "a proxy column rising while gold stays flat is over-optimisation" in plain
