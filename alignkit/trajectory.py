"""Trajectories: every ``eval.every_steps`` optimiser steps (PPO: iterations) a run's policy is evaluated on the
first ``eval.trajectory_prompts`` evaluation prompts and the point appended to ``eval/trajectory.jsonl``, so
the run's path on the reward-vs-KL plane, and its convergence, can be read afterwards; every
``save_every_steps`` the policy's weights are kept too (``RUN/saved/step-N``). The run installs
:meth:`TrajectoryRecorder.hook` as its context's ``trace``; training loops call it after every step."""

from __future__ import annotations

import torch

from alignkit.eval.evaluator import trajectory_point
from alignkit.models.policy import Policy
from alignkit.runlog import append_jsonl, atomic_dir
from alignkit.workspace import Workspace


class TrajectoryRecorder:
    """Evaluates a run's checkpoints into its run folder, on the shared reference samples and gold reward."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def hook(self, policy: Policy):
        """``on_step(step)`` for a loop training ``policy``; None when trajectories are off and no weights are
        kept (``save_every_steps``), or the workspace has no run folder. It also tells the workspace how far
        training got (for the closing point)."""
        ws, every, keep = self.ws, self.ws.recipe.eval.every_steps, self.ws.recipe.save_every_steps
        if not (every or keep) or ws.run_dir is None:
            return None

        def on_step(step: int) -> None:
            ws.trained_steps = step  # in the loop's own unit (PPO: iterations)
            if every and step % every == 0:
                self.record(policy, step)
            if keep and step % keep == 0 and ws.runtime.is_main:
                with atomic_dir(ws.run_dir / "saved" / f"step-{step}") as folder:
                    policy.save(folder)

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
