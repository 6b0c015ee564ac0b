"""Trajectories: every ``eval.every_steps`` optimiser steps (PPO: iterations) a run's policy is evaluated on the
first ``eval.trajectory_prompts`` evaluation prompts and the point appended to ``eval/trajectory.jsonl``, so
the run's path on the reward-vs-KL plane, and its convergence, can be read afterwards. The run installs
:meth:`TrajectoryRecorder.hook` as its context's ``trace``; training loops call it after every step."""

from __future__ import annotations

import torch

from alignkit.eval.evaluator import trajectory_point
from alignkit.models.policy import Policy
from alignkit.runlog import append_jsonl
from alignkit.workspace import Workspace


class TrajectoryRecorder:
    """Evaluates a run's checkpoints into its run folder, on the shared reference samples and gold reward."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def hook(self, policy: Policy):
        """``on_step(step)`` for a loop training ``policy``; None when trajectories are off or the workspace
        has no run folder. It also tells the workspace how far training got (for the closing point)."""
        ws, every = self.ws, self.ws.recipe.eval.every_steps
        if not every or ws.run_dir is None:
            return None

        def on_step(step: int) -> None:
            ws.trained_steps = step  # in the loop's own unit (PPO: iterations)
            if step % every == 0:
                self.record(policy, step)

        return on_step

    def record(self, policy: Policy, step: int) -> dict:
        """Evaluate ``policy`` as it is now on the trajectory prompts, without disturbing training's RNG."""
        ws, cfg = self.ws, self.ws.recipe.eval
        reference = ws.reference_samples(cfg.temperature).head(cfg.trajectory_prompts)
        devices = [policy.device] if policy.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            point = trajectory_point(policy, ws.reference_for(policy), reference, ws.gold, cfg,
                                     seed=ws.train_seed, step=step, runtime=ws.runtime)
        append_jsonl(ws.run_dir / "eval" / "trajectory.jsonl", point)
        return point
