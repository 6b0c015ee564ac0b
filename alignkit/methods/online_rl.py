"""GRPO and RLOO, trained by trl's own ``GRPOTrainer`` and ``RLOOTrainer`` (not re-implemented here).

This module only adapts the shared workspace to trl: the train prompts become a ``datasets.Dataset``, the
recipe's reward (the shared reward model, as PPO uses it, or the gold reward) becomes a trl reward function,
the recipe becomes a CPU-friendly trl config, and a callback feeds trl's metrics, progress, trajectory
checkpoints and the training budget back into the run. Each optimiser step trains on one generation batch
of ``prompts_per_step`` prompts x ``num_generations`` completions; with ``num_iterations`` = mu > 1 a batch
is reused for mu optimiser steps before the next is sampled.

KL semantics (read from trl 1.16's source), versus alignkit's PPO
    * PPO (:mod:`alignkit.methods.ppo`): ``kl_coef`` is a per-token penalty folded into the *reward* with the
      k1 estimator log pi/pi_ref, optionally adapted towards ``target_kl``; the value model and GAE see it.
    * GRPO (trl ``beta``): a KL term added to the per-token *loss*, beta * k3 with
      k3 = pi_ref/pi - log(pi_ref/pi) - 1 (>= 0; Schulman's estimator), multiplied by the importance ratio
      (``use_bias_correction_kl``, trl's default). It never enters the reward or the advantages. trl's logged
      ``kl`` is the mean per-token k3 over completion tokens.
    * RLOO (trl ``beta``): a penalty in the *reward*, like PPO, but per sequence: r - beta * sum_t k1, with k1
      the log-ratio of the sampling policy to pi_ref (can be negative per token), before the leave-one-out
      baseline. trl's logged ``kl`` is the mean per-token k1.
    Both are fixed coefficients (no adaptive target); none of trl's ``kl`` is the sequence KL that PPO logs
    and the evaluator reports (sum over tokens); the evaluator's KL is the same for every method.
    With ``kl_coef: 0`` trl loads no reference model at all, and nothing holds the policy near pi_ref.

The reference. Every method's pi_ref is the starting SFT policy. For a full model trl builds its own
reference by reloading ``model.config._name_or_path``; :func:`_pin_reference` then copies the starting
weights into it, so it is exactly the policy every other method starts from even where that path alone
would not reproduce it (e.g. a Hub revision other than the default). A model trl cannot reload by that
path at all (a ``gguf_file``) fails when the trainer starts; LoRA or ``kl_coef: 0`` need no reload. Under
LoRA trl keeps no second model: it adds a frozen ``ref`` adapter, a copy of the fresh, zero-initialised
LoRA adapter (B = 0), i.e. the base model: the same reference as alignkit's adapter-disabled one. That
adapter is deleted after training, so the saved run holds only the trained adapter. 4-bit/8-bit bases
pass through as the policy loads them (they require LoRA; trl casts the adapter to bfloat16, as for QLoRA).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from alignkit.artifacts import RewardSettings, reward_needs
from alignkit.config import option
from alignkit.console import bar as progress_bar
from alignkit.errors import AlignkitError
from alignkit.eval.kl_knob import KLKnob
from alignkit.methods.trl_resume import CheckpointedTrainer
from alignkit.models.policy import Policy
from alignkit.registry import register_method
from alignkit.schedule import TRL_SCHEDULES, schedule_problems, warmup_from_aliases
from alignkit.stages.workspace import Workspace


@dataclass
class OnlineRLConfig(RewardSettings):
    """Settings GRPO and RLOO share: what is sampled per step, the reward, and the optimiser."""

    ALIASES: ClassVar[dict[str, str]] = {"learning_rate": "lr", "max_steps": "steps", "epsilon": "clip_range",
                                         "max_completion_length": "max_new_tokens", "beta": "kl_coef",
                                         "save_steps": "checkpoint_every", "lr_scheduler_type": "lr_schedule"}

    steps: int = option(60, "optimiser steps (trl max_steps)", ge=1)
    prompts_per_step: int = option(16, "prompts per generation batch: every optimiser step trains on "
                                       "prompts_per_step x num_generations completions", ge=1)
    num_generations: int = option(4, "completions sampled per prompt: the group whose rewards form each "
                                      "completion's baseline", ge=2)
    num_iterations: int = option(1, "optimiser steps taken on each generation batch before the next is "
                                    "sampled (mu); above 1 the clipped ratio starts to matter", ge=1)
    prompt_pool: int = option(4000, "train prompts to draw generation batches from", ge=1)
    max_new_tokens: int = option(32, "completion length", ge=1)
    temperature: float = option(1.0, "sampling temperature; log-probs, ratios and KL are taken at it too",
                                gt=0)
    clip_range: float = option(0.2, "policy ratio clip epsilon (trl epsilon)", gt=0)
    lr: float = option(2e-4, "peak learning rate (AdamW; trl: learning_rate)", gt=0)
    lr_schedule: str = option("linear", "trl's learning-rate schedule after warm-up: linear or cosine (to "
                                        "0), constant (no warm-up), constant_with_warmup (trl: "
                                        "lr_scheduler_type)", choices=TRL_SCHEDULES)
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (trl's)", ge=0)
    warmup_ratio: float = option(0.0, "warm-up as a fraction of the steps, rounded up (trl: warmup_ratio, "
                                      "or warmup_steps below 1)", ge=0, lt=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)", ge=0)
    checkpoint_every: int = option(50, "save a resumable checkpoint every N optimiser steps (0: off; trl: "
                                       "save_steps)", ge=0)

    trl_names: ClassVar[tuple[str, str]]  # (trl config class, trl trainer class)

    @staticmethod
    def from_aliases(data: dict) -> tuple[dict, None]:
        """trl's warm-up as written for trl (:func:`~alignkit.schedule.warmup_from_aliases`)."""
        return warmup_from_aliases(data), None

    def check(self):
        if self.prompts_per_step > self.prompt_pool:
            yield "prompts_per_step", (f"must be <= prompt_pool ({self.prompt_pool}): trl drops a generation "
                                       f"batch it cannot fill")
        yield from schedule_problems(self.lr_schedule, self.warmup_steps, self.warmup_ratio)

    @property
    def completions_per_step(self) -> int:
        """The generation batch, a whole number of prompt groups by construction (trl requires it)."""
        return self.prompts_per_step * self.num_generations

    def method_settings(self) -> dict:
        """trl settings of this method alone (the shared ones are in :func:`trl_arguments`)."""
        return {}


@dataclass
class GRPOConfig(OnlineRLConfig):
    """GRPO (trl GRPOTrainer); defaults suit the tiny offline IMDb task on a CPU."""

    kl_coef: float = option(0.1, "beta of the per-token k3 KL term added to the loss (0: no reference model)",
                            ge=0)
    loss_type: str = option("dapo", "how token losses are averaged (trl loss_type): grpo per sequence, "
                                    "dapo/bnpo per token, dr_grpo by a constant, sapo soft-gated",
                            choices=("grpo", "dapo", "bnpo", "dr_grpo", "sapo"))
    scale_rewards: str = option("group", "divide advantages by the reward std of the group, of the batch, "
                                         "or not at all (Dr. GRPO)", choices=("group", "batch", "none"))

    trl_names: ClassVar[tuple[str, str]] = ("GRPOConfig", "GRPOTrainer")

    def method_settings(self) -> dict:
        return {"loss_type": self.loss_type, "scale_rewards": self.scale_rewards}


@dataclass
class RLOOConfig(OnlineRLConfig):
    """RLOO (trl RLOOTrainer); defaults suit the tiny offline IMDb task on a CPU."""

    kl_coef: float = option(0.1, "beta of the sequence KL penalty (summed k1 log-ratio) subtracted from the "
                                  "reward (0: no reference model)", ge=0)
    normalize_advantages: bool = option(False, "standardise the leave-one-out advantages over each batch")

    trl_names: ClassVar[tuple[str, str]] = ("RLOOConfig", "RLOOTrainer")

    def method_settings(self) -> dict:
        return {"normalize_advantages": self.normalize_advantages}


KL_COEF = KLKnob("kl_coef", rises=False)  # GRPO's and RLOO's KL knob: a smaller beta, a higher KL


# --------------------------------------------------------------------------------------------------
# the reward function trl calls


def eos_token_ids(policy: Policy) -> set[int]:
    """Every token id that ends a completion for trl: the tokenizer's EOS and the model's own EOS ids."""
    declared = policy.model.generation_config.eos_token_id
    declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    return {policy.tokenizer.eos_token_id, *declared}


class OnlineReward:
    """A trl reward function: scores each sampled completion with the recipe's reward, logs its gold reward,
    and counts what was sampled into the run's budget (the one place trl shows every completion).

    The reward model scores text exactly as for PPO: with EOS appended where the sampler stopped (the
    completion's last token is an EOS id; trl cuts everything after the first one)."""

    def __init__(self, ws: Workspace, cfg: RewardSettings, eos_ids: set[int]):
        self.__name__ = cfg.reward  # trl logs rewards/<name>/mean
        self.ws, self.eos_ids = ws, eos_ids
        self.proxy = ws.reward_for(cfg)  # None: the gold reward itself is maximised

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                 log_metric=None, **_) -> list[float]:
        budget = self.ws.budget
        budget.generated_sequences += len(completions)
        budget.generated_tokens += sum(len(ids) for ids in completion_ids)  # EOS included, as for PPO
        gold = np.asarray(self.ws.gold(prompts, completions), dtype=np.float64)
        if log_metric is not None:
            log_metric("reward/gold", float(gold.mean()))
        if self.proxy is None:
            return gold.tolist()
        ended = [bool(ids) and ids[-1] in self.eos_ids for ids in completion_ids]
        return np.asarray(self.proxy(prompts, completions, ended), dtype=np.float64).tolist()


# --------------------------------------------------------------------------------------------------
# the bridge from trl's training loop back to the run


class RunBridge:
    """Feeds trl's loop back into the run: its logged metrics (numbers only) into the run's log under the
    method's stage, a progress bar on stderr, trajectory checkpoints and the training budget. A
    transformers ``TrainerCallback`` once :func:`bridge_callback` mixes that class in (importing
    transformers here would slow every ``alignkit`` command down by seconds).

    Budget, per optimiser step: ``steps`` += 1, ``train_sequences`` += the completions of the generation
    batch it trained on, ``train_tokens`` += their prompt + completion tokens without padding (trl's
    ``num_input_tokens_seen`` grows by exactly that when it samples a batch; a batch reused for mu steps is
    counted mu times). Sampled sequences and tokens are counted by :class:`OnlineReward`."""

    def __init__(self, ws: Workspace, stage: str, policy: Policy, completions_per_step: int):
        self.ws, self.stage, self.completions_per_step = ws, stage, completions_per_step
        self.on_step = ws.ctx.on_step(policy)
        self.tokens_seen, self.batch_tokens, self.bar = 0, 0, None
        self.checkpointer = None  # the run's, when this stage claimed it: beaten between checkpoints

    def on_train_begin(self, args, state, control, **kwargs):
        # one bar per process group: trl calls this callback on every rank
        self.bar = progress_bar(total=state.max_steps, initial=state.global_step, desc=self.stage,
                                unit="step", leave=False, main=self.ws.runtime.is_main)

    def on_step_end(self, args, state, control, **kwargs):
        # a new generation batch was sampled for this step
        if state.num_input_tokens_seen != self.tokens_seen:
            self.batch_tokens = state.num_input_tokens_seen - self.tokens_seen
            self.tokens_seen = state.num_input_tokens_seen
        budget = self.ws.budget
        budget.steps += 1
        budget.train_sequences += self.completions_per_step
        budget.train_tokens += int(self.batch_tokens)
        self.bar.update(1)
        if self.on_step is not None:
            self.on_step(state.global_step)
        if self.checkpointer is not None and not self.checkpointer.read_only:
            self.checkpointer.beat()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:  # the end-of-training summary: the manifest has the timings
            return
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.ws.ctx.log.log(self.stage, state.global_step, numbers)
        if "reward/gold" in numbers:
            self.bar.set_postfix(gold=f"{numbers['reward/gold']:.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def bridge_callback(ws: Workspace, stage: str, policy: Policy, completions_per_step: int):
    """A :class:`RunBridge` that is a transformers ``TrainerCallback`` (no-op defaults for the
    other events)."""
    from transformers import TrainerCallback

    callback_cls = type("RunBridge", (RunBridge, TrainerCallback), {})
    return callback_cls(ws, stage, policy, completions_per_step)


# --------------------------------------------------------------------------------------------------
# building and running trl's trainer


def trl_arguments(ws: Workspace, cfg: OnlineRLConfig, output_dir: str) -> dict:
    """trl config values for this recipe: every optimiser step trains on one whole generation batch, shared
    out between the processes (no gradient accumulation); sampling with alignkit's settings (temperature
    only, no top-k/top-p); the run's precision; no gradient checkpointing, no vLLM, no reporting; metrics
    every step; checkpoints every ``checkpoint_every`` steps (written by :mod:`alignkit.methods.trl_resume`);
    the schedule and warm-up as given, a ratio as transformers 5 takes one (``warmup_steps`` below 1)."""
    world = ws.runtime.world
    if cfg.completions_per_step % world:
        raise AlignkitError(f"prompts_per_step x num_generations = {cfg.completions_per_step} completions "
                            "cannot "
                            f"be shared out evenly between {world} processes")
    return dict(
        output_dir=output_dir, max_steps=cfg.steps, seed=ws.train_seed,
        per_device_train_batch_size=cfg.completions_per_step // world, gradient_accumulation_steps=1,
        num_generations=cfg.num_generations, num_iterations=cfg.num_iterations,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0, top_k=0,
        beta=cfg.kl_coef, epsilon=cfg.clip_range, learning_rate=cfg.lr, max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type=cfg.lr_schedule, warmup_steps=cfg.warmup_ratio or cfg.warmup_steps,  # < 1: a ratio
        use_cpu=ws.device.type == "cpu", bf16=ws.runtime.precision == "bf16",
        fp16=ws.runtime.precision == "fp16", activation_checkpointing=ws.recipe.model.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        disable_dropout=True, use_vllm=False, report_to="none", logging_strategy="steps",
        save_strategy="steps" if cfg.checkpoint_every else "no", save_steps=cfg.checkpoint_every or 500,
        logging_steps=1, disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
        **cfg.method_settings())


def train_dataset(ws: Workspace, cfg: OnlineRLConfig):
    """The train prompts as the plain-text ``{"prompt": [...]}`` dataset trl samples generation
    batches from."""
    from datasets import Dataset

    prompts = ws.prompts("train", cfg.prompt_pool)
    if len(prompts) < cfg.prompts_per_step:
        raise AlignkitError(f"prompts_per_step: the task has only {len(prompts)} train prompts, fewer than "
                            "one "
                            f"generation batch ({cfg.prompts_per_step})")
    return Dataset.from_dict({"prompt": prompts})


def make_trainer(ws: Workspace, cfg: OnlineRLConfig, policy: Policy, output_dir: str, stage: str):
    """trl's trainer for ``cfg``'s method around ``policy``'s model, its reference pinned to the starting
    weights, with :class:`RunBridge` in place of transformers' progress/printer callbacks (which print
    every log dict to stdout, where the run's JSON summary goes), checkpointing through the run's
    checkpointer when this stage claims it (:class:`CheckpointedTrainer`)."""
    import trl
    from transformers import PrinterCallback, ProgressCallback

    config_cls, trl_cls = (getattr(trl, name) for name in cfg.trl_names)
    trainer_cls = type(trl_cls.__name__, (CheckpointedTrainer, trl_cls), {})
    bridge = bridge_callback(ws, stage, policy, cfg.completions_per_step)
    trainer = trainer_cls(
        model=policy.model, reward_funcs=OnlineReward(ws, cfg, eos_token_ids(policy)),
        args=config_cls(**trl_arguments(ws, cfg, output_dir)), train_dataset=train_dataset(ws, cfg),
        processing_class=policy.tokenizer, callbacks=[bridge])
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    _pin_reference(trainer, policy)
    trainer.budget, trainer.bridge = ws.budget, bridge
    checkpointer = ws.ctx.checkpointer_for(stage) if cfg.checkpoint_every else None
    trainer.checkpointer = bridge.checkpointer = checkpointer
    return trainer


def _pin_reference(trainer, policy: Policy) -> None:
    """Make trl's separate reference model (full fine-tuning with beta > 0) exactly the starting policy, and
    frozen (trl only ever runs it without gradients, but leaves its parameters trainable)."""
    if getattr(trainer, "ref_model", None) is not None:
        trainer.ref_model.load_state_dict(policy.model.state_dict())
        trainer.ref_model.requires_grad_(False).eval()


def _release(policy: Policy) -> Policy:
    """The trained policy as every other method returns it: trl's fused-LM-head forward patch removed
    (generation and scoring never used it, but the model should be the plain transformers one), trl's
    ``ref`` adapter deleted (LoRA), eval mode."""
    model = policy.model
    base = model.get_base_model() if policy.is_adapter else model
    vars(base).pop("forward", None)  # trl's add_fused_lm_head binds an instance-level forward
    if policy.is_adapter and "ref" in model.peft_config:
        model.delete_adapter("ref")
    model.eval()
    return policy


def train_with_trl(ws: Workspace, cfg: OnlineRLConfig, stage: str) -> Policy:
    """Train a fresh copy of the SFT policy with trl's trainer for ``cfg`` and return it."""
    policy = ws.load_policy()
    with tempfile.TemporaryDirectory(prefix=f"alignkit-{stage}-") as output_dir, warnings.catch_warnings():
        # trl 1.16 reads transformers' deprecated model.is_gradient_checkpointing at every generation batch
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated",
                                category=FutureWarning)
        trainer = make_trainer(ws, cfg, policy, output_dir, stage)
        trainer.train(resume_from_checkpoint=trainer.resume(Path(output_dir) / "resume"))
    return _release(policy)


@register_method("grpo", config=GRPOConfig, needs=reward_needs, kl_knob=lambda cfg: KL_COEF)
def train_grpo(ws: Workspace, cfg: GRPOConfig):
    """GRPO via trl's GRPOTrainer: group-normalised advantages, clipped ratio, k3 KL term in the loss."""
    return train_with_trl(ws, cfg, "grpo")


@register_method("rloo", config=RLOOConfig, needs=reward_needs, kl_knob=lambda cfg: KL_COEF)
def train_rloo(ws: Workspace, cfg: RLOOConfig):
    """RLOO via trl's RLOOTrainer: leave-one-out baseline, sequence KL penalty in the reward."""
    return train_with_trl(ws, cfg, "rloo")
