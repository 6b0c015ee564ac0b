"""model.gradient_checkpointing: the layers recompute their activations in the backward pass, and training
with it takes the same steps as without (to float tolerance) for DPO (full and LoRA) and PPO's policy and
value model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import make_workspace

from alignkit.methods.dpo import train_dpo
from alignkit.methods.ppo import train_ppo
from alignkit.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# recomputation repeats the same float ops: only summation order may differ
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture
def checkpointed(monkeypatch):
    """The ``use_reentrant`` of every layer call that went through torch's checkpoint (transformers binds it
    when checkpointing is enabled, so the patch must come before the models load)."""
    import transformers.modeling_utils
    from torch.utils.checkpoint import checkpoint
    calls = []

    def counting(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting)
    return calls


def train_dpo_steps(tmp_path, tiny_overrides, extra):
    rows = [{"prompt": p, "chosen": " a wonderful film", "rejected": " a terrible film"}
            for p in ("This movie is", "Overall", "Honestly", "My verdict:", "In short", "Well")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={data}", "dpo.lr=0.01",
                                "dpo.batch_size=4", "dpo.max_steps=4", "dpo.warmup_steps=0",
                                "dpo.log_every=1", *extra])
    ws = make_workspace(recipe, tmp_path / ("on" if recipe.model.gradient_checkpointing else "off"))
    torch.manual_seed(0)
    policy = train_dpo(ws, recipe.method_config("dpo"))
    return ws.ctx.log.records, {n: p.detach().clone() for n, p in policy.model.named_parameters()}


@pytest.mark.parametrize("lora", [[], ["model.lora.r=4", "model.lora.target_modules=[c_attn]"]], ids=["full",
                                                                                                      "lora"])
def test_dpo_with_gradient_checkpointing_matches_without(tmp_path, tiny_overrides, lora, checkpointed):
    off, weights_off = train_dpo_steps(tmp_path, tiny_overrides, lora)
    assert checkpointed == []
    on, weights_on = train_dpo_steps(tmp_path, tiny_overrides, [*lora, "model.gradient_checkpointing=true"])
    # every block of every step, non-reentrant
    assert len(checkpointed) >= 4 * 2 and set(checkpointed) == {False}
    assert [r["step"] for r in on] == [r["step"] for r in off] == [1, 2, 3, 4]
    for a, b in zip(off, on):
        torch.testing.assert_close(torch.tensor([a["loss"], a["rewards/margins"]]),
                                   torch.tensor([b["loss"], b["rewards/margins"]]), **TOLERANCE)
    assert off[-1]["loss"] < off[0]["loss"]  # it trained
    for name, value in weights_off.items():
        torch.testing.assert_close(weights_on[name], value, **TOLERANCE)


def test_ppo_policy_and_value_model_checkpoint_and_match(tmp_path, tiny_overrides, checkpointed):
    def run(extra):
        recipe = load_recipe(RECIPES / "ppo_imdb.yaml", [
            *tiny_overrides, "ppo.value_init=policy", "ppo.rollout_size=8", "ppo.minibatch_size=4",
            "ppo.max_new_tokens=6", "ppo.prompt_pool=16", "ppo.reward=gold", "ppo.steps=3", *extra])
        ws = make_workspace(recipe, tmp_path / str(len(extra)))
        torch.manual_seed(0)
        train_ppo(ws, recipe.method_config("ppo"))
        return ws.ctx.log.records

    off = run([])
    assert checkpointed == []
    on = run(["model.gradient_checkpointing=true"])
    assert len(checkpointed) >= 3 * 2 and set(checkpointed) == {False}
    keys = ("loss/policy", "loss/value", "kl", "reward/gold")
    for a, b in zip(off, on, strict=True):
        torch.testing.assert_close(torch.tensor([a[k] for k in keys]), torch.tensor([b[k] for k in keys]),
                                   **TOLERANCE)


def test_the_value_model_is_checkpointed_too(tmp_path, tiny_overrides):
    from alignkit.methods.ppo import PPOConfig, _value_model
    recipe = load_recipe(RECIPES / "ppo_imdb.yaml", [*tiny_overrides, "model.gradient_checkpointing=true"])
    ws = make_workspace(recipe, tmp_path)
    value = _value_model(ws, PPOConfig(value_init="policy", reward="gold"))
    flags = [m.gradient_checkpointing for m in value.model.modules() if type(m).__name__ == "GPT2Block"]
    assert flags and all(flags)


def test_gradient_checkpointing_changes_no_cache_key_or_training_identity(tiny_overrides):
    from alignkit.config import fingerprint, to_dict
    from alignkit.run.decision import training_identity
    off = load_recipe(RECIPES / "dpo_imdb.yaml", tiny_overrides)
    on = load_recipe(RECIPES / "dpo_imdb.yaml", [*tiny_overrides, "model.gradient_checkpointing=true"])
    assert to_dict(on)["model"]["gradient_checkpointing"] is True  # recorded in the manifest
    assert fingerprint(on.model) == fingerprint(off.model)
    assert training_identity(to_dict(on)) == training_identity(to_dict(off))


def test_save_every_steps_keeps_loadable_weights_along_the_way(tmp_path, tiny_overrides):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from alignkit.cli import main
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, ["run", str(RECIPES / "dpo_imdb.yaml"), "--out", str(out), *sets,
                                       "--set", "dpo.epochs=1", "--set", "save_every_steps=2",
                                       "--set", "dpo.checkpoint_every=1"])
    assert result.exit_code == 0, result.output
    steps = json.loads((out / "eval" / "summary.json").read_text())["budget"]["steps"]
    assert steps >= 4
    kept = sorted((out / "saved").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in kept] == [f"step-{s}" for s in range(2, steps + 1, 2)]
    assert not (out / "checkpoints").exists()  # the resume state goes when the run finishes; these stay
    weights = [load_file(str(p / "model.safetensors")) for p in [*kept, out / "model"]]
    assert (kept[0] / "tokenizer.json").is_file()
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(weights[0][name], weights[1][name])  # each kept folder is its own step
    if steps % 2 == 0:
        # the last kept step is the final model
        torch.testing.assert_close(weights[-2][name], weights[-1][name])
    else:
        assert not torch.equal(weights[-2][name], weights[-1][name])


def test_save_every_steps_is_refused_where_no_policy_trains():
    from alignkit.errors import ConfigError
    for method in ("reward_model", "best_of_n"):
        with pytest.raises(ConfigError, match=f"save_every_steps: {method} trains no policy"):
            load_recipe(None, [f"method={method}", "save_every_steps=5"])


def test_grpo_through_trl_checkpoints_and_matches(tiny_overrides, checkpointed):
    from test_online_rl import recipe_for, small

    from alignkit.methods.online_rl import train_grpo

    def run(extra):
        recipe = recipe_for("grpo", tiny_overrides, [*small("grpo", steps=2, reward="gold"), *extra])
        ws = make_workspace(recipe, None)
        torch.manual_seed(0)
        train_grpo(ws, recipe.method_config("grpo"))
        return ws.ctx.log.records

    off = run([])
    assert checkpointed == []
    on = run(["model.gradient_checkpointing=true"])
    assert checkpointed and set(checkpointed) == {False}  # trl's trainer kept our non-reentrant checkpointing
    for a, b in zip(off, on, strict=True):
        torch.testing.assert_close(torch.tensor([a["loss"], a["reward"]]), torch.tensor([b["loss"],
                                                                                         b["reward"]]),
                                   **TOLERANCE)
