"""A trl user's config and names work: trl's flat DPO config (tests/fixtures/trl_dpo.yaml, as trl's docs give
it) runs with ``alignkit dpo --config`` and ``alignkit run --config``; trl's training-argument names are
alignkit's keys in YAML and --set; unknown trl keys are named in one line; errors exit 1, usage errors 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import write_pairs  # tests/tiny.py

from alignkit.cli import main
from alignkit.recipe import load_recipe

TRL_DPO = Path(__file__).parent / "fixtures" / "trl_dpo.yaml"


def test_trl_names_are_alignkit_keys(tmp_path):
    dpo = load_recipe("dpo_imdb", ["dpo.learning_rate=3e-5", "dpo.per_device_train_batch_size=4",
                                   "dpo.gradient_accumulation_steps=2", "dpo.num_train_epochs=2",
                                   "dpo.logging_steps=3", "dpo.save_steps=7"]).method_config("dpo")
    assert (dpo.lr, dpo.batch_size, dpo.gradient_accumulation_steps, dpo.epochs, dpo.log_every,
            dpo.checkpoint_every) == (3e-5, 8, 2, 2.0, 3, 7)  # trl's batch: per device x accumulation
    grpo = load_recipe("grpo_imdb", ["grpo.learning_rate=3e-5", "grpo.max_steps=4", "grpo.beta=0.2"])
    assert (grpo.method_config("grpo").lr, grpo.method_config("grpo").steps,
            grpo.method_config("grpo").kl_coef) == (3e-5, 4, 0.2)
    recipe = tmp_path / "both.yaml"
    recipe.write_text("method: dpo\ndpo: {learning_rate: 1.0e-5, lr: 2.0e-5}\n")  # one setting twice
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"alignkit: error: {recipe}: dpo.learning_rate: is trl's name of lr, which is also given; give one"]


def test_trl_schedule_and_warmup_names(tmp_path):
    """trl's lr_scheduler_type is lr_schedule; a warm-up ratio (warmup_ratio, or transformers 5's warmup_steps
    below 1) given alone replaces the default warm-up steps, and so does trl's constant schedule, which has
    none; an override of one warm-up replaces the recipe's other."""
    def dpo(*sets: str, path="dpo_imdb"):
        cfg = load_recipe(path, list(sets)).method_config("dpo")
        return cfg.lr_schedule, cfg.warmup_steps, cfg.warmup_ratio

    assert dpo() == ("linear_to_tenth", 10, 0.0)
    assert dpo("dpo.lr_scheduler_type=cosine", "dpo.warmup_ratio=0.1") == ("cosine", 0, 0.1)
    assert dpo("dpo.warmup_steps=0.05") == ("linear_to_tenth", 0, 0.05)
    assert dpo("dpo.lr_scheduler_type=constant") == ("constant", 0, 0.0)
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text("method: dpo\ndpo: {warmup_steps: 5, lr_scheduler_type: linear}\n")
    assert dpo("dpo.warmup_ratio=0.2", path=recipe) == ("linear", 0, 0.2)  # the recipe's 5 steps replaced
    recipe.write_text("method: dpo\ndpo: {warmup_ratio: 0.2}\n")
    assert dpo("dpo.warmup_steps=3", path=recipe) == ("linear_to_tenth", 3, 0.0)
    grpo = load_recipe("grpo_imdb", ["grpo.lr_scheduler_type=cosine", "grpo.warmup_ratio=0.1"])
    grpo = grpo.method_config("grpo")
    assert (grpo.lr_schedule, grpo.warmup_steps, grpo.warmup_ratio) == ("cosine", 0, 0.1)


@pytest.mark.parametrize("text, line", [
    ("dpo: {warmup_steps: 5, warmup_ratio: 0.1}",
     "dpo.warmup_ratio: warmup_steps (5) is also given; give one (or warmup_steps: 0)"),
    ("dpo: {lr_scheduler_type: polynomial}",
     "dpo.lr_schedule: must be one of linear_to_tenth, linear, cosine, constant, constant_with_warmup, got "
     "'polynomial'"),
    ("dpo: {lr_scheduler_type: constant, warmup_steps: 5}",
     "dpo.lr_schedule: constant has no warm-up (warmup_steps: 5 is given): use constant_with_warmup"),
    ("dpo: {warmup_ratio: 1.0}", "dpo.warmup_ratio: must be < 1, got 1.0"),
    ("method: grpo\ngrpo: {lr_scheduler_type: linear_to_tenth}",
     "grpo.lr_schedule: must be one of linear, cosine, constant, constant_with_warmup, got "
     "'linear_to_tenth'"),
])
def test_a_schedule_alignkit_cannot_run_is_one_line(tmp_path, text, line):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(("" if text.startswith("method") else "method: dpo\n") + text + "\n")
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"alignkit: error: {recipe}: {line}"]


def test_a_flat_trl_config_takes_trl_schedule_and_warmup(tmp_path):
    local = ["method=dpo", f"preferences.source={write_pairs(tmp_path / 'pairs.jsonl')}"]
    config = tmp_path / "trl_dpo.yaml"
    config.write_text(TRL_DPO.read_text() + "lr_scheduler_type: cosine\nwarmup_ratio: 0.1\n")
    dpo = load_recipe(config, local).method_config("dpo")
    assert (dpo.lr_schedule, dpo.warmup_steps, dpo.warmup_ratio) == ("cosine", 0, 0.1)
    dpo = load_recipe(TRL_DPO, [*local, "lr_scheduler_type=constant_with_warmup", "warmup_steps=0.2"]
                      ).method_config("dpo")  # --set of a flat config's key, as trl's flag would be
    assert (dpo.lr_schedule, dpo.warmup_steps, dpo.warmup_ratio) == ("constant_with_warmup", 0, 0.2)


def test_a_flat_trl_config_is_translated(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    recipe = load_recipe(TRL_DPO, ["method=dpo", f"preferences.source={pairs}"])
    dpo = recipe.method_config("dpo")
    assert (recipe.method, recipe.model.name_or_path, recipe.model.max_length, recipe.seed) == (
        "dpo", "Qwen/Qwen2-0.5B-Instruct", 1024, 42)
    assert (recipe.preferences.source, recipe.task.dataset, recipe.gold_reward) == (
        str(pairs), "preferences", "heldout-reward-model")
    assert (dpo.lr, dpo.batch_size, dpo.epochs, dpo.log_every, dpo.checkpoint_every, dpo.beta) == (
        5e-7, 16, 1.0, 25, 500, 0.1)


def test_unknown_trl_keys_are_named_in_one_line(tmp_path):
    config = tmp_path / "trl_dpo.yaml"
    config.write_text(TRL_DPO.read_text() + "optim: adamw_8bit\neval_strategy: steps\n")
    result = CliRunner().invoke(main, ["dpo", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"alignkit: error: {config}: trl keys alignkit does not take: optim, eval_strategy: remove them; "
        f"dpo's settings: alignkit list, recipes/"]
    alone = tmp_path / "trl_kto.yaml"
    alone.write_text("model_name_or_path: x\ngradient_accumulation_steps: 4\n")
    result = CliRunner().invoke(main, ["run", "--config", str(alone)])
    assert result.exit_code == 1 and "gradient_accumulation_steps: in trl it multiplies" in result.output
    assert CliRunner().invoke(main, ["dpo", "--no-such-flag"]).exit_code == 2  # click's usage error


def test_the_trl_dpo_config_runs(tmp_path, imdb_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "pairs.jsonl", 24)
    tiny = ["--model_name_or_path", str(imdb_model_dir), "--dataset_name", "./pairs.jsonl",
            "--set", "model.max_length=48", "--set", "max_steps=2", "--set", "per_device_train_batch_size=2",
            "--set", "gradient_accumulation_steps=1", "--set", "preferences.heldout_fraction=0.2",
            "--set", "eval.n_prompts=4", "--set", "eval.max_new_tokens=4", "--set", "eval.temperatures=[]",
            "--set", "reward_model.max_steps=2", "--set", "eval.agreement_pairs=4"]
    result = CliRunner().invoke(main, ["dpo", "--config", str(TRL_DPO), *tiny])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "Qwen2-0.5B-DPO" / "eval" / "summary.json").read_text())
    assert summary["method"] == "dpo"
    manifest = json.loads((tmp_path / "Qwen2-0.5B-DPO" / "manifest.json").read_text())
    assert manifest["recipe"]["methods"]["dpo"]["lr"] == 5e-7
    result = CliRunner().invoke(main, ["run", "--config", str(TRL_DPO), *tiny, "--output_dir", "again"])
    assert result.exit_code == 0, result.output  # trl_dpo.yaml names its method
    assert (tmp_path / "again" / "eval" / "summary.json").is_file()
