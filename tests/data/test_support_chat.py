"""The bundled non-IMDb example: the ``builtin:support-chat`` pairs (our own data, trl's conversational
format, split by topic), the ``support_chat`` comparison recipe, and a task without a gold reward judged by a
held-out reward model whose agreement with the held-out pairs is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_conversational import chat_model_dir  # noqa: F401 (fixture)

from alignkit.cli import main
from alignkit.data.preferences import PreferenceConfig, read_preferences
from alignkit.errors import AlignkitError


def test_bundled_pairs_load_from_any_folder_and_split_by_topic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # builtin: data ships inside the package, not in a checkout
    data = read_preferences(PreferenceConfig(source="builtin:support-chat")).data
    assert (len(data), len(set(data.group))) == (384, 64)  # a group: one question's two phrasings
    assert len(set(map(str, data.prompts))) == 128
    train, held = data.split(0.25, seed=0)
    assert len(set(held.group)) == 16 and not set(train.group) & set(held.group)
    assert not {str(p) for p in train.prompts} & {str(p) for p in held.prompts}
    with pytest.raises(AlignkitError,
                       match=r"builtin:nope: no dataset of that name ships with alignkit \(builtin "
                                            r"datasets: builtin:support-chat\)"):
        read_preferences(PreferenceConfig(source="builtin:nope"))


def test_support_chat_comparison_plans_from_any_folder(tmp_path, monkeypatch):
    from alignkit.compare.plan import plan_comparison

    monkeypatch.chdir(tmp_path)
    plan = plan_comparison(["support_chat"])
    assert [e.label for e in plan.entries] == ["dpo", "ppo"]
    recipe = plan.entries[0].recipe
    assert (recipe.task.dataset, recipe.gold_reward, recipe.eval.judge) == ("preferences",
                                                                            "heldout-reward-model",
                                                                            "llm-judge")
    assert recipe.model.name_or_path == "builtin:tiny-chat-support"


def test_a_task_without_gold_is_scored_by_the_heldout_reward_model(tmp_path, tiny_overrides,
                                                                   chat_model_dir):  # noqa: F811
    from tiny import make_workspace

    from alignkit.eval.evaluator import score_texts
    from alignkit.recipe import load_recipe

    out = tmp_path / "run"
    sets = [*tiny_overrides, f"model.name_or_path={chat_model_dir}", "model.max_length=96",
            "task.dataset=preferences", "preferences.source=builtin:support-chat", "preferences.max_pairs=0",
            "preferences.heldout_fraction=0.25", "gold_reward=heldout-reward-model",
            "eval.judge_fraction=0.2",
            "eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=8", "dpo.max_steps=2",
            "dpo.batch_size=4",
            "reward_model.max_steps=3", "reward_model.batch_size=4"]
    result = CliRunner().invoke(main, ["run", "dpo_imdb", "--out", str(out),
                                       *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval" / "summary.json").read_text())
    gold = summary["judge_agreement"]  # the judge is the gold reward here: one agreement describes both
    assert gold["judge"] == "gold" and gold["n_pairs"] == summary["training_data"]["heldout_pairs"] > 0
    assert 0 <= gold["agreement"] <= 1
    ws = make_workspace(load_recipe(None, sets + ["method=dpo"]))
    topics = {name: set(pairs.group) for name, pairs in (("train", ws.train_pairs), ("held",
                                                                                     ws.heldout_pairs),
                                                          ("judge", ws.judge_pairs))}
    assert not topics["train"] & topics["held"] and not topics["judge"] & (topics["train"] | topics["held"])
    data = read_preferences(PreferenceConfig(source="builtin:support-chat")).data
    topic_of = {json.loads(p)[0]["content"]: g for p, g in zip(data.prompts, data.group)}
    samples = [json.loads(line) for line in (out / "eval" / "samples.jsonl").read_text().splitlines()]
    questions = {s["prompt"].split("user\n", 1)[1].split("<|im_end|>", 1)[0] for s in samples}
    # evaluation asks held-out topics only
    assert questions and {topic_of[q] for q in questions} <= topics["held"]
    reference = ws.reference_samples(1.0)
    assert np.allclose(reference.gold, score_texts(ws.gold, reference.prompts, reference.completions,
                                                   reference.ended))
    seen = {}

    def recording_gold(prompts, completions, ended):  # a reward model's score depends on where a reply ended
        seen["ended"] = list(ended)
        return np.zeros(len(prompts))

    fresh = make_workspace(load_recipe(None, sets + ["method=dpo"]), cache_dir=tmp_path / "fresh-cache")
    fresh.provide(gold=recording_gold)
    # scored as the policy's samples are (evaluate_at): with their ends
    sampled = fresh.reference_samples(1.0)
    assert seen["ended"] == list(sampled.ended)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "judge_reward_model" in manifest["stage_keys"]  # the judge split is carved for the gold reward too


def test_a_pairwise_judge_reads_the_question_and_replies_without_the_policys_chat_markup(
        chat_model_dir,  # noqa: F811
):
    from transformers import AutoTokenizer

    from alignkit.data.chat import plain_text
    from alignkit.eval.judges import PairwiseJudge

    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    plain = plain_text(tokenizer)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Where is my order?"}],
                                           tokenize=False,
                                           add_generation_prompt=True)
    assert prompt != "Where is my order?" and plain(prompt) == "Where is my order?"
    assert plain("Check Orders.<|im_end|>\n") == "Check Orders." and plain("Check Orders.") == "Check Orders."

    class Recording(PairwiseJudge):
        asked: list = []

        def ask(self, questions):
            self.asked.extend(questions)
            return ["A", "B"]  # the first response wins in both orders: a clear verdict for it

    judge = Recording("recording", "test")
    judge.readable = plain
    assert judge.compare([prompt], ["Check Orders.<|im_end|>\n"], ["No.<|im_end|>\n"]).tolist() == [1.0]
    assert Recording.asked == [("Where is my order?", "Check Orders.", "No."), ("Where is my order?", "No.",
                                                                                "Check Orders.")]


def test_stages_built_with_an_older_build_of_a_builtin_model_are_not_reused(tmp_path, monkeypatch):
    import alignkit.models.tiny_chat as tiny_chat
    from alignkit.recipe import load_recipe
    from alignkit.stages.keys import StageKeys

    recipe = load_recipe(None, ["method=dpo", "model.name_or_path=builtin:tiny-chat-support",
                                "gold_reward=heldout-"
                                "reward-model", "task.dataset=preferences",
                                "preferences.source=builtin:support-chat"])
    before = StageKeys(recipe, tmp_path).all()
    # the model would be rebuilt
    monkeypatch.setattr(tiny_chat, "source_digest", lambda source: "edited data")
    after = StageKeys(recipe, tmp_path).all()
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)
