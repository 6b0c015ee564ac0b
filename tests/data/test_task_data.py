"""Your own task, end to end (issue 15): the preference data is the task (rollout and evaluation prompts come
from its own prompts, split by prompt, whole, rendered with the chat template as in training), every format
loads the same pairs as JSONL, unpaired rows feed KTO, and a run left at the IMDb defaults on your data is
refused in one line before anything is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_conversational import CHATML, HEADER, chat_model_dir, explicit  # noqa: F401 (fixture)

from alignkit.cli import main
from alignkit.data.preferences import PreferenceConfig, read_preferences
from alignkit.data.unpaired import UnpairedData
from alignkit.errors import AlignkitError
from alignkit.registry import REWARDS, register_reward

if "test-length" not in REWARDS:
    @register_reward("test-length")
    def _length_judge(workspace):
        """A stand-in judge for a task of your own: longer completions score higher."""
        return lambda prompts, completions: np.asarray([len(c) for c in completions], dtype=np.float64)

QUESTIONS = [f"Question {i}: how do I reset my password?" for i in range(12)]


def support_rows() -> list[dict]:
    """12 prompts with 3 pairs each (36 rows), as a support assistant's preference data."""
    return [{"prompt": q, "chosen": f" Open settings, step {k}.", "rejected": f" No idea {k}."}
            for q in QUESTIONS for k in range(3)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs_of(source: str, **settings):
    data = read_preferences(PreferenceConfig(source=source, **settings)).data
    return list(zip(data.prompts, data.chosen, data.rejected)), data.group


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "save_to_disk", "hub"])
def test_each_format_loads_the_same_pairs_as_jsonl(fmt, tmp_path, monkeypatch):
    import datasets
    import pandas as pd

    rows = support_rows()
    expected = pairs_of(str(write_jsonl(tmp_path / "pairs.jsonl", rows)))
    source = str(tmp_path / f"pairs.{fmt}")
    if fmt == "json":
        Path(source).write_text(json.dumps(rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(source, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(source)
    elif fmt == "save_to_disk":
        datasets.Dataset.from_list(rows).save_to_disk(source)
    else:
        calls = []

        def load_dataset(name, config=None, split=None):
            calls.append((name, config, split))
            return datasets.Dataset.from_list(rows)

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        source = "hf:org/support"
        assert pairs_of(source, split="test", config="v2") == expected
        assert calls == [("org/support", "v2", "test")]
        return
    assert pairs_of(source) == expected


def test_conversational_parquet_and_unpaired_rows(tmp_path):
    import pandas as pd
    from test_conversational import assistant, user

    chat_rows = [explicit(q, "Open settings.", "No idea.") for q in QUESTIONS[:3]]
    pd.DataFrame(chat_rows).to_parquet(tmp_path / "chat.parquet")
    write_jsonl(tmp_path / "chat.jsonl", chat_rows)
    assert read_preferences(PreferenceConfig(source=str(tmp_path / "chat.parquet"))).data.prompts == \
        read_preferences(PreferenceConfig(source=str(tmp_path / "chat.jsonl"))).data.prompts

    unpaired = [{"prompt": q, "completion": c, "label": good} for q in QUESTIONS[:4]
                for c, good in ((" Open settings.", True), (" No idea.", False))]
    data = read_preferences(PreferenceConfig(source=str(write_jsonl(tmp_path / "kto.jsonl", unpaired)))).data
    assert isinstance(data, UnpairedData) and data.desirable == [True, False] * 4
    assert data.group == [0, 0, 1, 1, 2, 2, 3, 3]  # grouped by prompt
    pd.DataFrame(unpaired).astype(str).to_csv(tmp_path / "kto.csv", index=False)  # labels as text
    assert (
        read_preferences(PreferenceConfig(source=str(tmp_path / "kto.csv"))).data.desirable == data.desirable
    )
    chat_unpaired = [{"prompt": [user(q)], "completion": [assistant("Sure.")],
                      "label": True} for q in QUESTIONS[:2]]
    assert read_preferences(PreferenceConfig(source=str(write_jsonl(tmp_path / "ck.jsonl",
                                                                    chat_unpaired)))).unrendered


def test_split_is_by_prompt_and_honours_a_group_column(tmp_path):
    rows = support_rows()
    data = read_preferences(PreferenceConfig(source=str(write_jsonl(tmp_path / "p.jsonl", rows)))).data
    assert len(set(data.group)) == 12
    train, held = data.split(0.25, seed=0)
    assert len(set(held.prompts)) == 3 and not set(train.prompts) & set(held.prompts)
    grouped = [{**r, "group": f"ticket-{i // 6}"} for i, r in enumerate(rows)]  # 2 prompts per ticket
    data = read_preferences(PreferenceConfig(source=str(write_jsonl(tmp_path / "g.jsonl", grouped)))).data
    assert len(set(data.group)) == 6
    clash = [{**r, "group": i} for i, r in enumerate(rows)]  # one prompt in 3 groups
    with pytest.raises(AlignkitError, match="rows 0 and 1 have the same prompt but different groups"):
        read_preferences(PreferenceConfig(source=str(write_jsonl(tmp_path / "c.jsonl", clash))))


def tiny_run_args(tiny_overrides, data: Path, *extra: str) -> list[str]:
    sets = [*tiny_overrides, "task.dataset=preferences", f"preferences.source={data}",
            "preferences.heldout_fraction=0.25", "gold_reward=test-length", *extra]
    return [a for s in sets for a in ("--set", s)]


def test_default_task_on_your_data_is_refused_in_one_line_writing_nothing(tmp_path, tiny_overrides,
                                                                          cache_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", support_rows())
    before = sorted(os.listdir(cache_dir))
    sets = [a for s in [*tiny_overrides, f"preferences.source={data}"] for a in ("--set", s)]
    result = CliRunner().invoke(main, ["run", "dpo_imdb", "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"alignkit: error: preferences.source is your data ({data}), but task.dataset is still the IMDb "
        "default: "
        f"set task.dataset=preferences (and gold_reward, eval.judge to judges for your task)"]
    sets += ["--set", "task.dataset=preferences"]
    result = CliRunner().invoke(main, ["compare", "dpo", "ppo", "--out", str(tmp_path / "cmp"), *sets])
    assert result.output.strip().splitlines() == [
        "alignkit: error: compare: task.dataset is preferences, but gold_reward is still the IMDb default "
        "(imdb-sentiment), which would score your replies as movie-review sentiment on every reward axis: "
        "set gold_reward to a score judge for your task (e.g. heldout-reward-model) and eval.judge to what "
        "decides win rates (gold, llm-judge, endpoint-judge)"]
    # a judge for win rates alone leaves the reward axis IMDb's
    sets += ["--set", "eval.judge=heldout-reward-model"]
    result = CliRunner().invoke(main, ["compare", "dpo", "ppo", "--out", str(tmp_path / "cmp"), *sets])
    assert result.exit_code == 1 and "gold_reward is still the IMDb default" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "cmp").exists()
    assert sorted(os.listdir(cache_dir)) == before


def test_a_comparison_reads_its_shared_data_and_says_what_of_it_once(tmp_path, tiny_overrides, capsys,
                                                                       monkeypatch):
    import alignkit.recipe as recipe_module
    from alignkit.compare.plan import plan_comparison

    same = {"prompt": QUESTIONS[0], "chosen": " Same.", "rejected": " Same."}
    data = write_jsonl(tmp_path / "pairs.jsonl", support_rows() + [same])
    reads = []
    monkeypatch.setattr(recipe_module, "read_preferences", lambda cfg, **kw: reads.append(cfg) or
                        read_preferences(cfg, **kw))
    plan = plan_comparison(["dpo", "ipo=dpo:loss=ipo", "ppo"], overrides=[
        *tiny_overrides, f"preferences.source={data}", "task.dataset=preferences",
        "gold_reward=heldout-reward-model", "eval.judge=heldout-reward-model"], out=tmp_path / "cmp")
    assert len(plan.entries) == 3 and len(reads) == 1  # before: read (and noted) once per entry
    assert capsys.readouterr().err.count("dropped 1 of 37 pairs whose chosen and rejected are identical") == 1
    # each entry's own checks still run: a method that cannot learn from the rows is refused
    unpaired = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": q, "completion": " Sure.", "label": True}
                                                     for q in QUESTIONS])
    with pytest.raises(AlignkitError, match="which only kto learns from; dpo needs pairs"):
        plan_comparison(["kto", "dpo"], overrides=[*tiny_overrides, f"preferences.source={unpaired}",
                                                   "task.dataset=preferences"], out=tmp_path / "cmp2")


def test_unpaired_rows_refused_by_paired_methods_at_load(tmp_path, tiny_overrides):
    from alignkit.recipe import load_recipe

    rows = [{"prompt": q, "completion": " Sure.", "label": i % 2 == 0} for i, q in enumerate(QUESTIONS)]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(AlignkitError,
                       match="the rows are unpaired .* which only kto learns from; dpo needs pairs"):
        load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={data}"])
    load_recipe(None, [*tiny_overrides, "method=kto", f"preferences.source={data}"])


def test_kto_trains_on_unpaired_rows_end_to_end(tmp_path, tiny_overrides):
    rows = [{"prompt": q, "completion": c, "label": good} for q in QUESTIONS
            for c, good in ((" Open settings.", True), (" No idea.", False), (" Ask someone.", False))]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "kto_imdb", "--out", str(out), *tiny_run_args(
        tiny_overrides, data, "kto.max_steps=3", "kto.batch_size=6", "kto.log_every=1", "eval.every_steps=0",
        "eval.temperatures=[]")])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if r.get("stage") == "kto" and "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["method"] == "kto" and summary["training_data"]["heldout_prompts"] == 3  # split by prompt
    # the judge's agreement on unpaired rows: each held-out prompt's desirable reply against its 2 undesirable
    assert (
        summary["judge_agreement"]["n_pairs"] == 3 * 2 and summary["judge_agreement"]["agreement"] is not None
    )


def test_rollouts_and_evaluation_use_the_datas_prompts(tmp_path, tiny_overrides):
    from tiny import make_workspace

    from alignkit.recipe import load_recipe

    data = write_jsonl(tmp_path / "pairs.jsonl", support_rows())
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "sft_imdb", "--out", str(out), *tiny_run_args(
        tiny_overrides, data, "sft.max_steps=1", "sft.batch_size=4", "eval.every_steps=0",
        "eval.temperatures=[]")])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(None, [*tiny_overrides, "method=ppo", "task.dataset=preferences",
                                f"preferences.source={data}", "preferences.heldout_fraction=0.25",
                                "gold_reward=test-length"])
    ws = make_workspace(recipe)
    train, held = set(ws.train_pairs.prompts), set(ws.heldout_pairs.prompts)
    assert len(held) == 3 and not train & held
    assert set(ws.prompts("train", 1000)) == train  # what PPO, GRPO, RLOO and Best-of-N roll out on
    samples = [json.loads(line) for line in (out / "eval" / "samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} == held == set(ws.eval_prompts)  # whole prompts, never cut
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["training_data"]["completions_per_prompt"] == "6"
    assert summary["training_data"]["heldout_prompts"] == 3


def test_ppo_rollouts_draw_from_the_training_prompts(tmp_path, tiny_overrides, monkeypatch):
    from tiny import make_workspace

    from alignkit.methods.ppo import train_ppo
    from alignkit.models.policy import Policy
    from alignkit.recipe import load_recipe

    data = write_jsonl(tmp_path / "pairs.jsonl", support_rows())
    recipe = load_recipe(None, [*tiny_overrides, "method=ppo", "task.dataset=preferences",
                                f"preferences.source={data}", "preferences.heldout_fraction=0.25",
                                "gold_reward=test-length", "ppo.reward=gold", "ppo.value_init=policy",
                                "ppo.steps=1", "ppo.rollout_size=4",
                                "ppo.minibatch_size=4", "ppo.max_new_tokens=4"])
    seen, sample = [], Policy.sample

    def recording(self, prompts, *args, **kwargs):
        seen.extend(prompts)
        return sample(self, prompts, *args, **kwargs)

    monkeypatch.setattr(Policy, "sample", recording)
    ws = make_workspace(recipe)
    train_ppo(ws, recipe.method_config("ppo"))
    assert seen and set(seen) <= set(ws.train_pairs.prompts)


def test_chat_template_is_applied_to_evaluation_prompts(tmp_path, tiny_overrides,
                                                        chat_model_dir):  # noqa: F811
    from tiny import make_workspace

    from alignkit.recipe import load_recipe

    data = write_jsonl(tmp_path / "chat.jsonl", [explicit(q, "Open settings.",
                                                          "No idea.") for q in QUESTIONS])
    extra = tmp_path / "eval.txt"
    extra.write_text("A new question?\nAnother one?\n")
    common = [*tiny_overrides, "method=dpo", "task.dataset=preferences", f"preferences.source={data}",
              f"model.name_or_path={chat_model_dir}", "model.max_length=96",
              "preferences.heldout_fraction=0.25",
              "gold_reward=test-length"]
    ws = make_workspace(load_recipe(None, common))
    assert set(ws.eval_prompts) == set(ws.heldout_pairs.prompts) and len(ws.eval_prompts) == 3
    assert all(p.startswith("<|im_start|>user\nQuestion") and p.endswith(HEADER) for p in ws.eval_prompts)
    ws = make_workspace(load_recipe(None, [*common, f"eval.prompts={extra}"]))
    assert sorted(ws.eval_prompts) == sorted(f"<|im_start|>user\n{q}<|im_end|>\n{HEADER}"
                                             for q in ("A new question?", "Another one?"))
    overlap = tmp_path / "overlap.txt"
    overlap.write_text(QUESTIONS[0] + "\n" + "\n".join(QUESTIONS[1:]) + "\n")
    with pytest.raises(AlignkitError,
                       match="eval.prompts: 9 of its 12 prompts are also prompts of the training"):
        load_recipe(None, [*common, f"eval.prompts={overlap}"])
