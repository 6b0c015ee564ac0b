"""GRPO and RLOO through trl's own trainers, end to end on the tiny model: both complete through the real
pipeline (metrics, budget, trajectory, saved model, nothing on stdout), trl scores exactly what it sampled
with our reward, the reference is the SFT policy, LoRA round-trips, a learnable reward goes up, and bad
settings fail at load in one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import cpu_runtime, make_workspace

from alignkit.artifacts import reward_needs
from alignkit.context import Budget
from alignkit.errors import ConfigError
from alignkit.methods.online_rl import OnlineReward, RLOOConfig, make_trainer, train_grpo
from alignkit.models.policy import Policy
from alignkit.recipe import load_recipe
from alignkit.registry import BUILTIN_MODULES, METHODS, REWARDS, register_reward
from alignkit.run.pipeline import method_needs, run_recipe
from alignkit.runlog import read_jsonl

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
EXPECTED = {"loss", "reward", "reward/gold", "kl", "entropy", "grad_norm", "learning_rate",
            "completions/mean_length", "clip_ratio/region_mean"}
LETTER = "test-online-rl-letter-e"

if LETTER not in REWARDS:
    @register_reward(LETTER)
    def letter_e(workspace):
        """Share of the letter e in the completion: a reward a tiny random policy can learn in a few steps."""
        return lambda prompts, completions: np.array([c.count("e") / max(1, len(c)) for c in completions])


def small(method: str, steps: int = 4, **extra) -> list[str]:
    """Overrides for a seconds-long run: 4 prompts x 4 completions of 8 tokens per step, a new batch
    each step."""
    settings = {"steps": steps, "prompts_per_step": 4, "num_generations": 4, "num_iterations": 1,
                "max_new_tokens": 8, "prompt_pool": 32, **extra}
    return [f"{method}.{key}={value}" for key, value in settings.items()]


def recipe_for(method: str, tiny_overrides: list[str], overrides: list[str]):
    """The bundled recipe on the tiny model, judged by the letter-e reward (building the IMDb sentiment
    classifier would take longer than all of these runs)."""
    return load_recipe(RECIPES / f"{method}_imdb.yaml", [*tiny_overrides, f"gold_reward={LETTER}",
                                                         *overrides])


def test_both_methods_are_registered_and_need_the_reward_model_only_when_they_use_it():
    assert "alignkit.methods.online_rl" in BUILTIN_MODULES  # what `alignkit list` and recipes load
    for name, config in (("grpo", "GRPOConfig"), ("rloo", "RLOOConfig")):
        entry = METHODS.entry(name)
        assert entry.meta["config"].__name__ == config and entry.doc
        assert method_needs(name, entry.meta["config"](reward="gold")) == ()
        assert method_needs(name, entry.meta["config"]()) == ("train_pairs", "reward_model")


def test_grpo_runs_through_the_pipeline_without_printing_to_stdout(tmp_path, tiny_overrides, capfd):
    trajectory = ["eval.every_steps=2", "eval.trajectory_prompts=8"]
    recipe = recipe_for("grpo", tiny_overrides, small("grpo") + trajectory)
    capfd.readouterr()
    summary = run_recipe(recipe, tmp_path / "run")
    assert capfd.readouterr().out == ""  # the CLI prints the JSON summary there: trl must print nothing

    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "grpo"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert EXPECTED | {"rewards/reward_model/mean"} <= set(records[0])
    assert all(isinstance(v, (int, float)) for r in records for k, v in r.items() if k != "stage")
    assert records[0]["kl"] == 0.0  # the first batch comes from pi == pi_ref
    assert all(0 <= r["reward/gold"] <= 1 for r in records)

    batch = 4 * 4
    budget = summary.budget
    assert budget["steps"] == 4 and budget["generated_sequences"] == budget["train_sequences"] == 4 * batch
    assert 4 * batch <= budget["generated_tokens"] <= 4 * batch * 8  # EOS included, at most max_new_tokens
    assert budget["train_tokens"] > budget["generated_tokens"]  # prompt + completion tokens
    assert [p["step"] for p in read_jsonl(tmp_path / "run" / "eval" / "trajectory.jsonl")] == [2, 4]
    assert summary.method == "grpo" and "proxy_reward_mean" in summary.results  # scored by the shared RM

    saved = Policy.load_trained(recipe.model, tmp_path / "run" / "model", cache_dir=tmp_path,
                                runtime=cpu_runtime())
    assert not saved.is_adapter  # a full model folder


def test_rloo_with_lora_reuses_batches_and_saves_only_the_trained_adapter(tmp_path, tiny_overrides):
    recipe = recipe_for("rloo", tiny_overrides, small("rloo", num_iterations=2, reward="gold", lr=0.01) + [
        "model.lora.r=4", "model.lora.target_modules=[c_attn]", "eval.every_steps=0"])
    summary = run_recipe(recipe, tmp_path / "run")

    records = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "rloo"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    sampled = [r for r in records if "reward" in r]
    assert [r["step"] for r in sampled] == [1, 3]  # mu = 2: a new generation batch every other step
    assert records[0]["reward"] == records[0]["reward/gold"]  # reward: gold
    budget = summary.budget
    assert budget["generated_sequences"] == 2 * 16 and budget["train_sequences"] == 4 * 16

    folder = tmp_path / "run" / "model"
    assert (folder / "adapter_config.json").is_file() and not (folder / "ref").exists()
    ws = make_workspace(recipe, tmp_path / "again")
    trained = Policy.load_trained(recipe.model, folder, cache_dir=ws.cache_dir, runtime=ws.runtime)
    assert trained.is_adapter and list(trained.model.peft_config) == ["default"]
    batch = trained.encode(["This movie was"], [" a great film"])
    with torch.no_grad():
        base = ws.sft.sequence_logprobs(batch)
        torch.testing.assert_close(ws.reference_for(trained).sequence_logprobs(batch), base)
        assert not torch.allclose(trained.sequence_logprobs(batch), base)  # the adapter trained


def test_trl_scores_exactly_the_prompts_and_completions_it_sampled(tmp_path, tiny_overrides):
    recipe = recipe_for("grpo", tiny_overrides, small("grpo", steps=2, reward="gold"))
    ws = make_workspace(recipe, None)
    calls = []
    gold = ws.gold

    def recording_gold(prompts, completions):
        scores = np.asarray(gold(prompts, completions), dtype=np.float64)
        calls.append((list(prompts), list(completions), scores))
        return scores

    ws.provide(gold=recording_gold)
    policy = train_grpo(ws, recipe.method_config("grpo"))
    assert "forward" not in vars(policy.model) and not policy.model.training  # trl's fused-head patch is gone

    pool = set(ws.prompts("train", 32))
    assert len(calls) == 2
    for (prompts, completions, scores), record in zip(calls, ws.ctx.log.records):
        assert len(prompts) == len(completions) == 16 and set(prompts) <= pool
        groups = [prompts[i:i + 4] for i in range(0, 16, 4)]
        assert all(len(set(group)) == 1 for group in groups)  # one prompt per group of num_generations
        assert all(isinstance(c, str) for c in completions)
        assert record["reward"] == pytest.approx(scores.mean(), rel=1e-5)  # what trl optimised: our scores
        assert record["reward/gold"] == pytest.approx(scores.mean(), rel=1e-5)


def test_reward_function_tells_the_reward_model_where_the_sampler_stopped():
    seen = {}

    def proxy(prompts, completions, ended):
        seen.update(prompts=prompts, completions=completions, ended=ended)
        return np.array([1.0, 2.0])

    asked = []
    ws = SimpleNamespace(budget=Budget(), gold=lambda prompts, completions: [0.5] * len(completions),
                         reward_for=lambda settings: asked.append(reward_needs(settings)) or proxy)
    logged = {}
    reward = OnlineReward(ws, SimpleNamespace(reward="reward_model", reward_model_4bit=True), eos_ids={0})
    assert asked == [("train_pairs", "reward_model_4bit")]  # the 4-bit scorer the recipe asked for
    scores = reward(["a", "b"], [" x", " y z"], [[7, 0], [7, 8]], log_metric=logged.__setitem__,
                    trainer_state=None)  # trl passes extra keyword arguments
    assert scores == [1.0, 2.0] and reward.__name__ == "reward_model"
    assert seen == {"prompts": ["a", "b"], "completions": [" x", " y z"], "ended": [True, False]}
    assert logged == {"reward/gold": 0.5}
    assert (ws.budget.generated_sequences, ws.budget.generated_tokens) == (2, 4)


def test_trl_reference_is_the_starting_policy_even_when_its_path_holds_other_weights(tmp_path,
                                                                                     tiny_overrides):
    recipe = recipe_for("grpo", tiny_overrides, small("grpo", reward="gold", kl_coef=0.1))
    ws = make_workspace(recipe, None)
    policy = ws.load_policy()
    with torch.no_grad():  # a start trl cannot reload from model.config._name_or_path (think: a Hub revision)
        for param in policy.model.parameters():
            param.add_(0.01)
    start = {name: param.detach().clone() for name, param in policy.model.named_parameters()}
    trainer = make_trainer(ws, recipe.method_config("grpo"), policy, str(tmp_path), "grpo")
    for name, param in trainer.ref_model.named_parameters():
        torch.testing.assert_close(param, start[name], rtol=0, atol=0)
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())


def test_grpo_raises_a_learnable_reward(tmp_path, tiny_overrides):
    recipe = recipe_for("grpo", tiny_overrides, small("grpo", steps=20, reward="gold", prompts_per_step=8,
                                                      lr=0.01,
                                                      kl_coef=0.0))
    ws = make_workspace(recipe, None)
    train_grpo(ws, recipe.method_config("grpo"))
    rewards = [r["reward/gold"] for r in ws.ctx.log.records]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.02, rewards


@pytest.mark.parametrize("overrides, message", [
    (["grpo.prompts_per_step=16", "grpo.prompt_pool=8"], "grpo.prompts_per_step: must be <= prompt_pool (8)"),
    (["grpo.num_generations=1"], "grpo.num_generations: must be >= 2"),
    (["grpo.loss_type=cispo"], "grpo.loss_type: must be one of"),
    (["grpo.normalize_advantages=true"], "grpo.normalize_advantages: unknown key"),
    (["method=rloo", "rloo.kl_coef=-1"], "rloo.kl_coef: must be >= 0"),
])
def test_bad_settings_fail_at_load_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_recipe(RECIPES / "grpo_imdb.yaml", overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rloo_config_defaults_validate():
    assert RLOOConfig().completions_per_step == 16 * 4
    assert not list(RLOOConfig().check())


def test_too_few_train_prompts_for_one_generation_batch_is_one_line():
    """The task's size is known only once it is loaded: fewer train prompts than one generation batch stops
    training before trl starts, in one line naming the key."""
    from types import SimpleNamespace

    from alignkit.errors import AlignkitError
    from alignkit.methods.online_rl import GRPOConfig, train_dataset

    ws = SimpleNamespace(prompts=lambda split, n: [f"prompt {i}" for i in range(min(n, 5))])
    with pytest.raises(AlignkitError) as info:
        train_dataset(ws, GRPOConfig(prompts_per_step=8))
    assert str(info.value) == ("prompts_per_step: the task has only 5 train prompts, fewer than one "
                               "generation batch (8)")
    assert len(train_dataset(ws, GRPOConfig(prompts_per_step=4))) == 5


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_grpo_and_rloo_can_score_with_the_4bit_reward_model(method):
    cfg = load_recipe(RECIPES / f"{method}_imdb.yaml",
                      [f"{method}.reward_model_4bit=true"]).method_config(method)
    assert method_needs(method, cfg) == ("train_pairs", "reward_model_4bit")
    with pytest.raises(ConfigError, match=f"{method}.reward_model_4bit: reward: gold uses no reward model"):
        load_recipe(RECIPES / f"{method}_imdb.yaml", [f"{method}.reward=gold",
                                                      f"{method}.reward_model_4bit=true"])


@pytest.mark.parametrize("sets, schedule, warmup", [
    ([], "linear", 0),  # trl's defaults, as before the settings existed
    (["grpo.lr_scheduler_type=cosine", "grpo.warmup_ratio=0.1", "grpo.max_steps=55"], "cosine", 6),  # 5.5 up
    (["grpo.lr_scheduler_type=constant_with_warmup", "grpo.warmup_steps=4"], "constant_with_warmup", 4),
])
def test_grpo_passes_its_schedule_and_warmup_to_trl(tmp_path, sets, schedule, warmup):
    """trl's own GRPOConfig, built from alignkit's arguments, runs the schedule and warm-up the recipe gives
    (a ratio as transformers 5 takes one: warmup_steps below 1)."""
    import trl

    from alignkit.methods.online_rl import trl_arguments

    recipe = load_recipe(RECIPES / "grpo_imdb.yaml", sets)
    cfg = recipe.method_config("grpo")
    ws = SimpleNamespace(train_seed=0, device=torch.device("cpu"),
                         runtime=SimpleNamespace(world=1, precision="fp32"), recipe=recipe)
    args = trl.GRPOConfig(**trl_arguments(ws, cfg, str(tmp_path)))
    assert (args.lr_scheduler_type.value, args.get_warmup_steps(cfg.steps)) == (schedule, warmup)
