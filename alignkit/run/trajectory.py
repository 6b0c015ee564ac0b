"""Trajectories: every ``eval.every_steps`` optimiser steps (PPO: iterations) a run's policy is evaluated on
the first ``eval.trajectory_prompts`` evaluation prompts and the point appended to ``eval/trajectory.jsonl``,
so the run's path on the reward-vs-KL plane, and its convergence, can be read afterwards; every
``save_every_steps`` the policy's weights are kept too (``RUN/saved/step-N``). The run installs
:meth:`TrajectoryRecorder.hook` as its context's ``trace``; training loops call it after every step, and the
recorder keeps how far training got and what it cost, for the run's closing point and manifest."""

from __future__ import annotations

import time

import torch

from alignkit.eval.evaluator import trajectory_point
from alignkit.models.policy import Policy
from alignkit.runlog import append_jsonl, atomic_dir
from alignkit.stages.builder import StageBuilder


class TrajectoryRecorder:
    """Evaluates a run's checkpoints into its run folder, on the shared reference samples and gold reward, and
    owns the run's record of training: the last step reached, what it had consumed then, what it cost."""

    def __init__(self, ws: StageBuilder):
        self.ws = ws
        self.began: float | None = None  # when the loop asked for its hook: training's wall clock starts
        self.evaluating = 0.0            # seconds spent evaluating checkpoints, not training
        self.trained_steps = 0  # the last step a training loop reported (in its own unit; PPO: iterations)
        self.training_compute: dict = {}  # and what training had consumed then (budget_* keys)
        # measured (the manifest's cost): wall seconds at each checkpoint and "last", the policy's parameters
        self.training_cost: dict = {"wall_s": {}, "policy_parameters": None}

    def restored(self, step: int) -> None:
        """Training resumed from its checkpoint at ``step``: it got that far, even if no step ran since."""
        self.trained_steps = max(self.trained_steps, step)

    def compute(self) -> dict:
        """What training consumed so far, for the compute-matched view: the budget's counters as ``budget_*``
        keys of a point (deterministic, so in the trajectory; the wall seconds go to ``training_cost``)."""
        return {f"budget_{k}": v for k, v in self.ws.budget.as_dict().items()}

    def wall(self) -> float | None:
        """Seconds of training itself since the loop began (checkpoint evaluation excluded)."""
        return round(time.perf_counter() - self.began - self.evaluating,
                     3) if self.began is not None else None

    def hook(self, policy: Policy):
        """``on_step(step)`` for a loop training ``policy``; None when trajectories are off and no weights are
        kept (``save_every_steps``), or the workspace has no run folder. It also records how far training got
        (for the closing point)."""
        ws, every, keep = self.ws, self.ws.recipe.eval.every_steps, self.ws.recipe.save_every_steps
        model = getattr(policy, "model", None)
        if isinstance(model, torch.nn.Module):  # the N of the compute view's FLOPs (alignkit.report.cost)
            self.training_cost["policy_parameters"] = sum(p.numel() for p in model.parameters())
        if not (every or keep) or ws.run_dir is None:
            return None
        self.began = time.perf_counter()

        def on_step(step: int) -> None:
            self.trained_steps = step  # in the loop's own unit (PPO: iterations)
            self.training_compute = self.compute()  # what the closing point records
            if every and step % every == 0:
                self.record(policy, step)
            if keep and step % keep == 0 and ws.runtime.is_main:
                with atomic_dir(ws.run_dir / "saved" / f"step-{step}") as folder:
                    policy.save(folder)
            self.training_cost["wall_s"]["last"] = self.wall()  # measured: the manifest's cost keeps it

        return on_step

    def record(self, policy: Policy, step: int, *, closing: bool = False) -> dict:
        """Evaluate ``policy`` as it is now on the trajectory prompts, without disturbing training's RNG;
        ``closing``: the trained policy after training, charged what training consumed up to its last step."""
        ws, cfg = self.ws, self.ws.recipe.eval
        spent = dict(self.training_compute) if closing else self.compute()
        wall, began = (None if closing else self.wall()), time.perf_counter()
        reference = ws.reference_samples(cfg.temperature).head(cfg.trajectory_prompts)
        devices = [policy.device] if policy.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            point = trajectory_point(policy, ws.reference_for(policy), reference, ws.gold, cfg,
                                     seed=ws.train_seed, step=step, runtime=ws.runtime)
        point.update(spent)
        if wall is not None:
            self.training_cost["wall_s"][str(step)] = wall
        self.evaluating += time.perf_counter() - began
        append_jsonl(ws.run_dir / "eval" / "trajectory.jsonl", point)
        return point
