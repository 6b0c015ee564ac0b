"""DPO and its loss variants: a preference trainer whose loss comes from the loss registry.

Reference log-probs are computed once before training (the reference is frozen), then each step scores
chosen and rejected completions with the policy in one forward pass and applies the registered loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignkit.artifacts import Artifact
from alignkit.config import option
from alignkit.errors import UnknownNameError
from alignkit.eval.kl_knob import KLKnob
from alignkit.losses.base import PreferenceLogps, contract_problem, loss_parameters, param_problem
from alignkit.models.pairs import pair_batch
from alignkit.registry import LOSSES, register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig, batch_indices, fit


@dataclass
class DPOConfig(TrainingConfig):
    """Direct preference optimisation settings (loss from the loss registry)."""

    loss: str = option("sigmoid",
                       "registered preference loss (sigmoid = DPO, ipo, simpo, orpo, ...: `alignkit list`)")
    beta: float = option(0.1, "KL strength beta: implicit reward = beta * log(pi / pi_ref)", gt=0)
    loss_params: dict[str, Any] = option({}, "extra keyword parameters of the loss, e.g. {label_smoothing: "
                                             "0.1}")
    reference_free: bool = option(False, "drop pi_ref (an implicit uniform reference)")

    def check(self):
        """The loss exists, takes these parameters, each of the right type and range, and keeps the loss
        contract on a synthetic batch (so a bad value or a broken plugin loss fails at load, not mid-run)."""
        try:
            entry = LOSSES.entry(self.loss)
        except UnknownNameError as exc:
            yield "loss", str(exc)
            return
        accepted = loss_parameters(entry.obj)
        bad = False
        for key, value in self.loss_params.items():
            if key not in accepted:
                bad = True
                yield f"loss_params.{key}", (f"loss {self.loss!r} takes no parameter {key!r} "
                                             f"(it takes: {', '.join(accepted) or 'none'})")
                continue
            problem = param_problem(key, value, accepted[key], entry.meta.get("bounds", {}))
            if problem:
                bad = True
                yield f"loss_params.{key}", problem
        if not bad:
            problem = contract_problem(entry.obj, self.beta, self.loss_params)
            if problem:
                yield (
                    ("loss_params" if self.loss_params else "loss"),
                    f"loss {self.loss!r} ({entry.source}): {problem}",
                )


def uses_reference(cfg: DPOConfig) -> bool:
    """Whether training reads pi_ref's log-probs: not when reference_free, nor for a loss registered with
    ``uses_reference=False`` (SimPO, ORPO), so no reference pass is computed for them."""
    return not cfg.reference_free and LOSSES.entry(cfg.loss).meta.get("uses_reference", True)


def _needs(cfg: DPOConfig) -> tuple[Artifact, ...]:
    return (Artifact.TRAIN_PAIRS, Artifact.REFERENCE_LOGPS) if uses_reference(cfg) else (Artifact.TRAIN_PAIRS,
                                                                                         )


def _kl_knob(cfg: DPOConfig) -> KLKnob | None:
    """beta, smaller for a higher KL; none for a loss without pi_ref (SimPO, ORPO), whose beta holds nothing
    to it (a loss not registered here, a plugin the report did not load, is taken to use pi_ref)."""
    return KLKnob("beta", rises=False) if cfg.loss not in LOSSES or uses_reference(cfg) else None


@register_method("dpo", config=DPOConfig, needs=_needs, kl_knob=_kl_knob)
def train_dpo(ws: Workspace, cfg: DPOConfig):
    """Direct Preference Optimization (Rafailov et al. 2023) with a pluggable preference loss."""
    data = ws.train_pairs
    policy = ws.load_policy()
    append_eos = ws.recipe.preferences.append_eos
    loss_fn = LOSSES.get(cfg.loss)
    # pi_ref's log-probs over the pairs: one shared, cached pass for every DPO-family run on these pairs
    with_reference = uses_reference(cfg)
    ref_chosen, ref_rejected = ws.reference_logps if with_reference else (None, None)

    def step(index: list[int]):
        batch = pair_batch(policy, data, index, append_eos)
        ws.budget.add_batch(batch)
        logps = policy.sequence_logprobs(batch)
        chosen, rejected = logps.chunk(2)
        lengths = batch.target_mask.sum(-1)
        ref = ((ref_chosen[index].to(policy.device), ref_rejected[index].to(policy.device)) if with_reference
               else (None, None))
        out = loss_fn(PreferenceLogps(chosen, rejected, *ref, *lengths.chunk(2)), beta=cfg.beta,
                      **cfg.loss_params)
        return out.losses.mean(), preference_metrics(out, chosen, rejected)

    fit(ws.ctx, policy.trainable_parameters(), batch_indices(len(data), cfg, ws.train_seed), step, cfg,
        stage="dpo", models=[policy.model], trace=policy)
    return policy


def preference_metrics(out, chosen_logps, rejected_logps) -> dict[str, torch.Tensor]:
    """The implicit-reward metrics DPO users expect, slash-namespaced."""
    margins = out.chosen_rewards - out.rejected_rewards
    return {
        "rewards/chosen": out.chosen_rewards.mean(),
        "rewards/rejected": out.rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > 0).float().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
