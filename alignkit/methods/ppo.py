"""PPO for RLHF (Ziegler et al. 2019; InstructGPT): maximise r(x, y) - beta * KL(pi || pi_ref).

Each iteration samples completions from the policy, scores them with the reward model (or the gold
reward: PPO-GT), turns score and per-token KL penalty into token rewards, estimates advantages with GAE
against a separate value model, then takes several clipped PPO epochs over minibatches. The maths lives
in :mod:`alignkit.rl.ops`; sampling and log-probs are the shared policy's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from alignkit.artifacts import RewardSettings, reward_needs
from alignkit.checkpoint import TrainState
from alignkit.config import option
from alignkit.eval.kl_knob import KLKnob
from alignkit.models.finetune import completion_nll
from alignkit.models.scalar_head import ScalarModel
from alignkit.models.value_head import SharedTrunkValue
from alignkit.registry import register_method
from alignkit.rl import ops
from alignkit.stages.workspace import Workspace
from alignkit.training import APPLIED, OptimConfig, TrainingLoop, accumulate, apply_update, make_optimizer


@dataclass
class PPOConfig(OptimConfig, RewardSettings):
    """PPO settings; defaults suit the tiny offline IMDb task on a CPU."""

    steps: int = option(60, "PPO iterations (rollout + optimisation)", ge=1)
    rollout_size: int = option(64, "prompts sampled per iteration", ge=2)
    prompt_pool: int = option(4000, "train prompts to draw rollouts from", ge=1)
    max_new_tokens: int = option(32, "completion length", ge=1)
    kl_coef: float = option(0.1, "initial per-token KL penalty coefficient beta", ge=0)
    target_kl: Optional[float] = option(None,
                                        "adapt beta towards this sequence KL in nats (None: fixed beta)",
                                        gt=0)
    kl_horizon: int = option(256, "adaptive-KL horizon in samples: beta moves at most 20% x rollout_size / "
                                  "horizon per iteration, so short runs need short horizons", ge=1)
    gamma: float = option(1.0, "GAE discount", ge=0, le=1)
    lam: float = option(0.95, "GAE lambda", ge=0, le=1)
    ppo_epochs: int = option(4, "optimisation passes over each rollout batch", ge=1)
    minibatch_size: int = option(16, "sequences per PPO minibatch (over all processes together)", ge=1)
    clip_range: float = option(0.2, "policy ratio clip epsilon", gt=0)
    clip_range_value: float = option(0.2, "value clip epsilon", gt=0)
    vf_coef: float = option(0.5, "value-loss weight", ge=0)
    lr: float = option(2e-4, "policy peak learning rate (AdamW, on lr_schedule; no warm-up)", gt=0)
    value_lr: float = option(5e-4, "value-model learning rate", gt=0)
    whiten_advantages: bool = option(True, "normalise advantages per rollout batch")
    value_init: str = option("reward_model", "initialise the value model from the reward model (InstructGPT) "
                                             "or the SFT policy's backbone", choices=("reward_model",
                                                                                      "policy"))
    value_model: str = option("separate",
                              "separate: a full value model (InstructGPT's layout); shared: a value "
                                          "head on the policy's own trunk (memory-lean: no second model, and "
                                          "with LoRA policy, reference and value share one base)",
                              choices=("separate", "shared"))
    ptx_coef: float = option(0.0, "PPO-ptx: weight gamma of the pretraining log-likelihood term", ge=0)
    ptx_batch_size: int = option(16, "pretraining (demonstration) sequences per minibatch for PPO-ptx", ge=1)
    checkpoint_every: int = option(10, "save a resumable checkpoint every N PPO iterations (0: off)", ge=0)

    def check(self):
        if self.minibatch_size > self.rollout_size:
            yield "minibatch_size", f"must be <= rollout_size ({self.rollout_size})"
        if self.gradient_accumulation_steps > self.minibatch_size:
            yield "gradient_accumulation_steps", f"must be <= minibatch_size ({self.minibatch_size})"
        if self.value_model == "shared" and self.value_init == "reward_model":
            yield (
                "value_init",
                "value_model: shared puts a fresh value head on the policy; use value_init: policy",
            )
        elif self.value_init == "reward_model" and self.reward == "gold":
            yield "value_init", "reward: gold trains no reward model; use value_init: policy"
        if self.reward_model_4bit and self.value_init == "reward_model" and self.reward != "gold":
            yield "reward_model_4bit", ("the value model would still copy the full-precision reward model; "
                                        "use value_init: policy (or value_model: shared)")


def _value_model(ws: Workspace, cfg: PPOConfig, policy=None):
    """The value function: a head on ``policy``'s trunk (shared), or a full model from the reward model
    (InstructGPT) or the SFT backbone."""
    if cfg.value_model == "shared":
        return SharedTrunkValue(policy)
    if cfg.value_init == "reward_model":
        return ws.reward_model.copy()  # same weights, trained separately: the reward model stays fixed
    return ScalarModel.from_backbone(ws.recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime)


class PPOTrainer:
    """Holds the policy, reference, value model and reward of one PPO run; :meth:`train` runs it."""

    def __init__(self, ws: Workspace, cfg: PPOConfig):
        self.ws, self.cfg, self.ctx, self.runtime = ws, cfg, ws.ctx, ws.runtime
        self.policy = ws.load_policy()
        self.reference = ws.reference_for(self.policy)
        self.value = _value_model(ws, cfg, self.policy)
        self.value.model.train()
        # the reward model scores text exactly as it was trained on it (EOS where the sampler stopped)
        self.proxy = ws.reward_for(cfg)  # None: PPO-GT maximises the gold reward
        self.prompts = ws.prompts("train", cfg.prompt_pool)
        self.kl_ctl = ops.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
        per_iteration = cfg.ppo_epochs * -(-cfg.rollout_size // cfg.minibatch_size)
        total, tail = (
            (cfg.lr_schedule_steps or cfg.steps) * per_iteration,
            cfg.lr_schedule_steps * per_iteration,
        )
        # collected once (not per minibatch): policy and value model have their own optimisers
        self.policy_params, self.value_params = self.policy.trainable_parameters(), self.value.parameters()
        # policy and value model follow the same learning-rate schedule, each from its own peak rate
        self.opt, self.sched = make_optimizer(self.policy_params, lr=cfg.lr, total_steps=total,
                                              tail_after=tail, schedule=cfg.lr_schedule)
        self.value_opt, self.value_sched = make_optimizer(self.value_params, lr=cfg.value_lr,
                                                          total_steps=total, tail_after=tail,
                                                          schedule=cfg.lr_schedule)
        self.ptx_texts = ws.task.train_texts if cfg.ptx_coef > 0 else []
        self.rng = random.Random(ws.train_seed)
        # everything a resumed run restores: both models' weights, optimisers and schedules, our own RNG
        self.state = TrainState([*self.policy_params, *self.value_params], [self.opt, self.value_opt],
                                [self.sched, self.value_sched], budget=ws.budget, rngs=[self.rng])
        self.iteration, self.loop = 0, None

    def train(self):
        """PPO iterations on the shared training loop (resume, progress, logging, trajectory, checkpoints);
        a checkpoint also keeps the adaptive KL coefficient."""
        self.policy.model.train()
        self.loop = TrainingLoop(self.ctx, "ppo", self.state, self.cfg.steps,
                                 checkpoint_every=self.cfg.checkpoint_every,
                                 trace=self.policy, unit="iter", keep_final=self.cfg.keep_final_state)
        self.kl_ctl.value = self.loop.restored.get("kl_coef", self.kl_ctl.value)
        self.loop.run(self.iterate, lambda: {"kl_coef": self.kl_ctl.value})
        self.policy.model.eval()
        return self.policy

    def iterate(self, step: int) -> dict:
        """One PPO iteration: a rollout, its optimisation epochs, the KL coefficient's update; its record."""
        self.iteration = step
        rollout, stats = self.rollout()
        stats.update(self.optimise(rollout))
        self.kl_ctl.update(stats["kl"], self.cfg.rollout_size)
        if self.ctx.budget.nonfinite_skipped:
            stats["nonfinite_skipped"] = self.ctx.budget.nonfinite_skipped
        return stats

    @torch.no_grad()
    def rollout(self) -> tuple[dict, dict]:
        """Sample, score, and compute everything PPO needs from the behaviour policy (no gradients)."""
        cfg, policy = self.cfg, self.policy
        prompts = self.rng.sample(self.prompts, min(cfg.rollout_size, len(self.prompts)))
        # one generate call per process: its share of the rollout
        sampled = policy.sample(prompts, max_new_tokens=cfg.max_new_tokens, temperature=1.0,
                                runtime=self.runtime,
                                batch_size=-(-len(prompts) // self.runtime.world), budget=self.ctx.budget)
        batch = sampled.batch.to(policy.device)
        mask = batch.target_mask
        scored = self.score(sampled)
        logps, values, proxy, seq_kl = scored["logps"], scored["values"], scored["proxy"], scored["seq_kl"]
        rewards, k1 = ops.token_rewards(proxy, logps, scored["ref_logps"], mask, self.kl_ctl.value)
        advantages, returns = ops.gae_advantages(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = ops.masked_whiten(advantages, mask)
        stats = {
            "reward/gold": scored["gold"].mean(), "reward/proxy": proxy.mean(),
            "kl": seq_kl.mean(), "kl/k1": k1.sum(-1).mean(),
            "reward/total": (proxy - self.kl_ctl.value * seq_kl).mean(),
            "entropy": scored["entropy"].sum() / mask.sum(), "kl_coef": self.kl_ctl.value,
            "completion_length": mask.sum(-1).mean(), "lr": self.sched.get_last_lr()[0],
        }
        data = dict(batch=batch, mask=mask, logps=logps, values=values, advantages=advantages,
                    returns=returns)
        return data, {k: float(v) for k, v in stats.items()}

    def score(self, sampled) -> dict[str, torch.Tensor]:
        """Per row of a rollout: token log-probs of policy and reference, values, the full-distribution
        sequence KL, summed entropy, and gold and proxy rewards. Each process scores one share of the rows
        (only the small per-token results are gathered, never logits), so no process scores them all."""
        policy, rows = self.policy, len(sampled.prompts)
        share = -(-rows // self.runtime.world)

        def score_share(_, start: int) -> dict[str, torch.Tensor]:
            part = sampled.select(list(range(start, min(start + share, rows))))
            batch = part.batch.to(policy.device)
            mask = batch.target_mask
            logps, logits = policy.token_logprobs(batch, return_logits=True)
            ref_logps, ref_logits = self.reference.token_logprobs(batch, return_logits=True)
            gold = torch.as_tensor(np.asarray(self.ws.gold(part.prompts, part.completions)),
                                   dtype=torch.float32)
            proxy = (torch.as_tensor(self.proxy(part.prompts, part.completions, part.ended),
                                     dtype=torch.float32)
                     if self.proxy else gold)
            # V(s_t) is read where token t+1 is predicted
            out = {"logps": logps, "ref_logps": ref_logps,
                   "values": self.value.token_values(batch)[:, :-1] * mask,
                   "seq_kl": (ops.full_kl_from_logits(logits, ref_logits) * mask).sum(-1),
                   "entropy": (ops.entropy_from_logits(logits) * mask).sum(-1), "gold": gold, "proxy": proxy}
            return {key: value.cpu() for key, value in out.items()} if self.runtime.world > 1 else out

        parts = self.runtime.map_chunks(score_share, range(0, rows, share))
        return {key: torch.cat([part[key] for part in parts]).to(policy.device) for key in parts[0]}

    def optimise(self, data: dict) -> dict:
        """Clipped PPO epochs over shuffled minibatches; returns averaged losses and diagnostics."""
        cfg = self.cfg
        totals: dict[str, list[float]] = {}
        n = data["mask"].shape[0]
        for _ in range(cfg.ppo_epochs):
            for index in torch.randperm(n).split(cfg.minibatch_size):
                for key, value in self.minibatch_step(data, index).items():
                    totals.setdefault(key, []).append(float(value))
        return {k: sum(v) / len(v) for k, v in totals.items()}

    def minibatch_step(self, data: dict, index: torch.Tensor) -> dict:
        """One optimiser step of policy and value model on minibatch ``index`` (shared out between processes
        and split into micro-batches like every other trainer's batch), plus the PPO-ptx term."""
        cfg, runtime, budget = self.cfg, self.runtime, self.ctx.budget
        loss, stats = accumulate(lambda part: self.minibatch_loss(data, torch.tensor(part)), index.tolist(),
                                 cfg.gradient_accumulation_steps, runtime, budget)
        if cfg.ptx_coef > 0:
            texts = self.rng.sample(self.ptx_texts, min(cfg.ptx_batch_size, len(self.ptx_texts)))
            ptx, _ = accumulate(lambda part: (cfg.ptx_coef * self.ptx_loss(part), {}), texts,
                                cfg.gradient_accumulation_steps, runtime, budget)
            loss = loss + ptx
            stats["loss/ptx"] = float(ptx) / cfg.ptx_coef
        status, _ = apply_update(self.ctx, self.state, [self.policy_params, self.value_params], loss, cfg,
                                 stage="ppo",
                                 step=self.iteration, checkpointer=self.loop.checkpointer)
        return stats if status == APPLIED else {}

    def minibatch_loss(self, data: dict, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Clipped policy loss plus weighted clipped value loss on rows ``index`` of the rollout."""
        cfg = self.cfg
        batch, mask = data["batch"].select(index), data["mask"][index]
        self.ws.budget.add_batch(batch)
        logps = self.policy.token_logprobs(batch)
        pg_loss, pg_stats = ops.clipped_policy_loss(logps, data["logps"][index], data["advantages"][index],
                                                    mask, cfg.clip_range)
        values = self.value.token_values(batch)[:, :-1]
        vf_loss, vf_stats = ops.clipped_value_loss(values, data["values"][index], data["returns"][index],
                                                   mask,
                                                   cfg.clip_range_value)
        stats = {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), **pg_stats, **vf_stats}
        return pg_loss + cfg.vf_coef * vf_loss, stats

    def ptx_loss(self, texts: list[str]) -> torch.Tensor:
        """PPO-ptx: negative log-likelihood of demonstration text, keeping the policy close to the data."""
        batch = self.policy.encode([""] * len(texts), texts)
        self.ws.budget.add_batch(batch)
        return completion_nll(self.policy.model, batch)


def _kl_knob(cfg: PPOConfig) -> KLKnob:
    """target_kl (nats, larger for a higher KL) when beta adapts to it, else the fixed beta (smaller)."""
    return KLKnob("target_kl", rises=True, nats=True) if cfg.target_kl is not None else KLKnob("kl_coef",
                                                                                                rises=False)


@register_method("ppo", config=PPOConfig, needs=reward_needs, kl_knob=_kl_knob)
def train_ppo(ws: Workspace, cfg: PPOConfig):
    """RLHF with PPO against a Bradley-Terry reward model (or the gold reward) and a per-token KL penalty."""
    return PPOTrainer(ws, cfg).train()
