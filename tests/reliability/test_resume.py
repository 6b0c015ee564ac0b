"""Crash safety: a run killed with SIGKILL resumes from its last checkpoint and ends exactly where an
uninterrupted run ends (same summary, same weights, same metrics); PPO restores its extra state too."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from reliability_helpers import (
    PLUGIN,
    QUICK,
    RECIPES,
    ROOT,
    assert_same_run,
    kill_at_checkpoint,
)

from alignkit.checkpoint import Checkpointer, TrainState, flatten, unflatten
from alignkit.recipe import load_recipe
from alignkit.run.decision import run_state
from alignkit.run.pipeline import run_recipe
from alignkit.training import make_optimizer

DPO = [*QUICK, "dpo.loss=zz_slow_loss", "dpo.max_steps=12", "dpo.checkpoint_every=4", "dpo.log_every=3"]


def test_sigkilled_dpo_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_overrides, cache_dir):
    overrides = [*tiny_overrides, *DPO]
    # warms the cache
    run_recipe(load_recipe(RECIPES / "dpo_imdb.yaml", overrides, [PLUGIN]), tmp_path / "straight")
    out = tmp_path / "killed"
    command, env = kill_at_checkpoint(RECIPES / "dpo_imdb.yaml", out, overrides, cache_dir, 4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and not (out / "model").exists()  # killed mid-training
    recipe = load_recipe(RECIPES / "dpo_imdb.yaml", overrides, [PLUGIN])
    assert run_state(out, recipe) == "resume"  # what `alignkit compare` sees

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the running run" in resumed.stderr and "from its checkpoint at step" in resumed.stderr
    assert_same_run(tmp_path / "straight", out, "dpo")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["resumed"][0]["from_step"] >= 4
    assert not (out / "checkpoints").exists()  # a finished run keeps no training state


def test_changed_recipe_is_not_resumed(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, *QUICK, "dpo.max_steps=4", "dpo.checkpoint_every=2"]
    out = tmp_path / "run"
    run_recipe(load_recipe(RECIPES / "dpo_imdb.yaml", overrides), out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running", "pid": 2**22 + 7}))
    changed = load_recipe(RECIPES / "dpo_imdb.yaml", [*overrides, "dpo.beta=0.5"])
    with pytest.raises(Exception, match=r"different recipe \(methods.dpo.beta: 0.1 -> 0.5\)"):
        run_recipe(changed, out)
    assert run_state(out, changed) == "train"


def test_ppo_interrupted_in_process_resumes_exactly(tmp_path, tiny_overrides, monkeypatch):
    from alignkit.methods.ppo import PPOTrainer

    overrides = [*tiny_overrides, *QUICK, "ppo.steps=4", "ppo.checkpoint_every=2", "ppo.rollout_size=8",
                 "ppo.minibatch_size=4", "ppo.max_new_tokens=8", "ppo.prompt_pool=32", "ppo.target_kl=1",
                 "ppo.kl_horizon=16", "reward_model.max_steps=4"]
    recipe = lambda: load_recipe(RECIPES / "ppo_imdb.yaml", overrides)  # noqa: E731
    run_recipe(recipe(), tmp_path / "straight")
    rollout, calls = PPOTrainer.rollout, []

    def dying_rollout(self):
        calls.append(1)
        if len(calls) == 4:  # iteration 4: after the checkpoint at iteration 2 and a logged iteration 3
            raise RuntimeError("simulated crash")
        return rollout(self)

    monkeypatch.setattr(PPOTrainer, "rollout", dying_rollout)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe(), tmp_path / "crashed")
    monkeypatch.setattr(PPOTrainer, "rollout", rollout)
    assert json.loads((tmp_path / "crashed" / "manifest.json").read_text())["status"] == "failed"
    run_recipe(recipe(), tmp_path / "crashed")
    assert_same_run(tmp_path / "straight", tmp_path / "crashed", "ppo")


def test_state_round_trip_has_no_pickle_and_is_exact(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer, scheduler = make_optimizer(model.parameters(), lr=1e-2, total_steps=10, warmup_steps=1)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = TrainState(list(model.parameters()), [optimizer], [scheduler])
    tensors: dict = {}
    skeleton = json.loads(json.dumps(flatten(optimizer.state_dict(), tensors), allow_nan=False))
    assert unflatten(skeleton, tensors)["param_groups"] == optimizer.state_dict()["param_groups"]
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.claim("unit")
    path = checkpointer.save(1, state, {"x": float("inf")})
    assert sorted(p.name for p in path.iterdir()) == ["CHECKSUMS.json", "COMPLETE", "state.json",
                                                      "state.safetensors"]
    before = (
        [p.detach().clone() for p in model.parameters()],
        optimizer.state_dict()["state"][0]["exp_avg"].clone(),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert checkpointer.restore(state) == (1, {"x": float("inf")})
    assert all(torch.equal(a, b) for a, b in zip(before[0], model.parameters()))
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], before[1])
