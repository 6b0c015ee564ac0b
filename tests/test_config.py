"""Recipes are validated once at load: every problem names the file and the dotted key."""

from __future__ import annotations

import pytest

from alignkit.config import apply_overrides
from alignkit.errors import ConfigError
from alignkit.recipe import load_recipe


def write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def error_of(path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_valid_recipe_builds_typed_sections(tmp_path):
    recipe = load_recipe(write(tmp_path, "method: dpo\ndpo: {beta: 0.5, loss: ipo}\neval: {n_prompts: 10}\n"))
    cfg = recipe.method_config("dpo")
    assert (cfg.beta, cfg.loss, recipe.eval.n_prompts) == (0.5, "ipo", 10)
    assert isinstance(cfg.beta, float)


def test_misspelled_key_names_file_path_and_suggestion(tmp_path):
    message = error_of(write(tmp_path, "method: dpo\ndpo: {bta: 0.5}\n"))
    assert message.startswith(str(tmp_path / "r.yaml"))
    assert "dpo.bta: unknown key (did you mean 'beta'?)" in message


def test_wrong_type_and_impossible_value(tmp_path):
    assert "eval.n_prompts: expected an integer, got str 'many'" in error_of(
        write(tmp_path, "method: dpo\neval: {n_prompts: many}\n"))
    assert "dpo.beta: must be > 0, got -1.0" in error_of(write(tmp_path, "method: dpo\ndpo: {beta: -1}\n"))
    assert "task.prompt_max_tokens: must be >= prompt_min_tokens (5)" in error_of(
        write(tmp_path, "method: dpo\ntask: {prompt_min_tokens: 5, prompt_max_tokens: 3}\n"))


def test_unknown_method_and_loss_list_close_matches(tmp_path):
    assert "method: unknown method 'dop'; did you mean 'dpo'?" in error_of(write(tmp_path, "method: dop\n"))
    message = error_of(write(tmp_path, "method: dpo\ndpo: {loss: sigmoidd}\n"))
    assert "dpo.loss: unknown loss 'sigmoidd'; did you mean 'sigmoid'" in message


def test_unknown_task_dataset_and_gold_reward_fail_at_load(tmp_path):
    message = error_of(write(tmp_path, "method: dpo\ntask: {dataset: imbd}\ngold_reward: imdb-sentimnet\n"))
    assert "task.dataset: unknown dataset 'imbd'; did you mean 'imdb'?" in message
    assert "gold_reward: unknown reward 'imdb-sentimnet'; did you mean 'imdb-sentiment'?" in message


def test_loss_params_are_checked_against_the_loss_signature(tmp_path):
    message = error_of(write(tmp_path,
                             "method: dpo\ndpo: {loss: hinge, loss_params: {label_smoothing: 0.1}}\n"))
    assert "dpo.loss_params.label_smoothing: loss 'hinge' takes no parameter" in message
    ok = load_recipe(write(tmp_path,
                           "method: dpo\ndpo: {loss: robust, loss_params: {label_smoothing: 0.1}}\n"))
    assert ok.method_config("dpo").loss_params == {"label_smoothing": 0.1}


def test_missing_file_and_malformed_yaml(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.yaml")
    message = error_of(write(tmp_path, "method: dpo\ndpo: {beta: [0.1\n"))
    assert "malformed YAML (line" in message


def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    recipe = load_recipe(write(tmp_path, "method: dpo\n"), ["dpo.beta=0.25", "eval.temperature=0.7",
                                                            "model.lora.r=4"])
    assert recipe.method_config("dpo").beta == 0.25
    assert recipe.eval.temperature == 0.7
    assert recipe.model.lora.r == 4
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["dpo.beta"])


def test_all_problems_reported_together(tmp_path):
    message = error_of(write(tmp_path, "method: dpo\nseeed: 1\neval: {top_p: 2}\n"))
    assert "seeed: unknown key (did you mean 'seed'?)" in message and "eval.top_p: must be <= 1" in message


def test_quantized_model_requires_lora(tmp_path):
    assert "model.lora: quantized" in error_of(write(tmp_path, "method: dpo\nmodel: {load_in_4bit: true}\n"))
