"""GRPO and RLOO resume too: trl's trainer checkpoints through the run's checkpointer; a GRPO run killed with
SIGKILL after a checkpoint resumes with the same command to the uninterrupted run's summary and weights."""

from __future__ import annotations

import json
import subprocess

import pytest
from reliability_helpers import (
    PLUGIN,
    RECIPES,
    ROOT,
    assert_same_run,
    kill_at_checkpoint,
    strict_jsonl,
    summary,
    weights,
)

from alignkit.methods.online_rl import RunBridge
from alignkit.recipe import load_recipe
from alignkit.run.pipeline import run_recipe

# 6 steps of 4 prompts x 4 completions, checkpoints at 2 and 4; the gold reward (slow on purpose: a window to
# kill the run in) is maximised directly, so no shared stage is built; 12 prompts: it resumes in epoch 2
GRPO = ["gold_reward=zz_slow_letter_e", "grpo.reward=gold", "grpo.steps=6", "grpo.checkpoint_every=2",
        "grpo.prompts_per_step=4", "grpo.num_generations=4", "grpo.max_new_tokens=8", "grpo.prompt_pool=12",
        "eval.every_steps=0", "eval.temperatures=[]", "eval.n_prompts=8"]


def test_sigkilled_grpo_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_overrides, cache_dir):
    overrides = [*tiny_overrides, *GRPO]
    run_recipe(load_recipe(RECIPES / "grpo_imdb.yaml", overrides, [PLUGIN]), tmp_path / "straight")
    out = tmp_path / "killed"
    command, env = kill_at_checkpoint(RECIPES / "grpo_imdb.yaml", out, overrides, cache_dir, 4)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert [r["step"] for r in strict_jsonl(out / "metrics.jsonl") if r["stage"] == "grpo"][-1] >= 4

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "from its checkpoint at step 4" in resumed.stderr
    assert_same_run(tmp_path / "straight", out, "grpo", ("step_time",))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["resumed"][0]["from_step"] == 4
    assert not (out / "checkpoints").exists()
    assert summary(out)["budget"]["steps"] == 6 and weights(out)


def test_rloo_crashed_while_reusing_a_generation_batch_resumes_exactly(tmp_path, tiny_overrides, monkeypatch):
    """num_iterations=2: the checkpoint at step 3 is taken half-way through a generation batch, which the
    resumed run must reuse for step 4 rather than sample anew."""
    overrides = [*tiny_overrides, *[o.replace("grpo.", "rloo.") for o in GRPO], "rloo.steps=5",
                 "rloo.checkpoint_every=3", "rloo.num_iterations=2"]
    recipe = lambda: load_recipe(RECIPES / "rloo_imdb.yaml", overrides, [PLUGIN])  # noqa: E731
    run_recipe(recipe(), tmp_path / "straight")
    step_end = RunBridge.on_step_end

    def dying_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise RuntimeError("simulated crash")
        return step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(RunBridge, "on_step_end", dying_step_end)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe(), tmp_path / "crashed")
    monkeypatch.setattr(RunBridge, "on_step_end", step_end)
    saved = json.loads((tmp_path / "crashed" / "checkpoints" / "step-3" / "state.json").read_text())["extra"]
    assert saved["trl_step"] == 3 and saved["buffered"]  # half-way through the 2nd generation batch
    run_recipe(recipe(), tmp_path / "crashed")
    assert_same_run(tmp_path / "straight", tmp_path / "crashed", "rloo", ("step_time",))
    assert summary(tmp_path / "crashed")["budget"]["steps"] == 5
