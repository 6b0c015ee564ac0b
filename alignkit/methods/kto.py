"""KTO as a method: unpaired data (trl's prompt/completion/label rows) as given, or the shared preference
pairs unpaired into desirable (chosen) and undesirable (rejected) completions, trained with the KTO loss
against the SFT reference.

Unpairing is trl's ``unpair_preference_dataset``: every pair gives one desirable and one undesirable
example, so KTO sees exactly the completions DPO sees. With K ranked completions per prompt, a middle-ranked
completion is desirable in some pairs and undesirable in others; what remains is its net count of wins. The
reference point z0 is estimated per batch from mismatched pairs (prompt k with the completion of example
k-1 of the same batch, as trl's collator cycles them); the reference log-probs of the matched examples come
from the shared reference pass over the pairs, those of the mismatched ones from the reference each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.artifacts import Artifact
from alignkit.config import option
from alignkit.data.unpaired import UnpairedData
from alignkit.eval.kl_knob import KLKnob
from alignkit.losses.kto import kl_reference_point, kto_loss
from alignkit.registry import register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig, batch_indices, fit


@dataclass
class KTOConfig(TrainingConfig):
    """Kahneman-Tversky optimisation on the preference pairs, unpaired."""

    beta: float = option(0.1, "KL strength beta: implicit reward = beta * log(pi / pi_ref)", gt=0)
    lr: float = option(5e-4, "peak learning rate (AdamW)", gt=0)
    batch_size: int = option(64, "examples (completions) per step; the KL reference point needs at least 2",
                             ge=2)
    desirable_weight: float = option(1.0, "lambda_D: weight of desirable (chosen) examples", gt=0)
    undesirable_weight: float = option(1.0, "lambda_U: weight of undesirable (rejected) examples", gt=0)


def unpaired_examples(data, append_eos: bool) -> tuple[list[str], list[str], list[bool], list[bool]]:
    """Prompts, completions, desirable flags and EOS flags: unpaired data (prompt, completion, label) as
    given;
    pair i becomes examples 2i (chosen, desirable) and 2i+1 (rejected, undesirable)."""
    if isinstance(data, UnpairedData):
        return (
            list(data.prompts),
            list(data.completions),
            list(data.desirable),
            data.eos_flags(range(len(data)), append_eos),
        )
    chosen_eos, rejected_eos = data.eos_flags(range(len(data)), append_eos)
    prompts, completions, desirable, eos = [], [], [], []
    for i in range(len(data)):
        prompts += [data.prompts[i]] * 2
        completions += [data.chosen[i], data.rejected[i]]
        desirable += [True, False]
        eos += [chosen_eos[i], rejected_eos[i]]
    return prompts, completions, desirable, eos


@register_method("kto", config=KTOConfig, needs=(Artifact.TRAIN_PAIRS, Artifact.REFERENCE_LOGPS),
                 takes_unpaired=True, kl_knob=lambda cfg: KLKnob("beta", rises=False))
def train_kto(ws: Workspace, cfg: KTOConfig):
    """KTO (Ethayarajh et al. 2024): desirable/undesirable completions from the same pairs, no pairing."""
    prompts, completions, desirable, eos = unpaired_examples(ws.train_pairs, ws.recipe.preferences.append_eos)
    ref_chosen, ref_rejected = ws.reference_logps
    if isinstance(ws.train_pairs, UnpairedData):  # one reference log-prob per example, in the data's order
        reference_logps = ref_chosen
    else:
        # example order: 2i, 2i+1
        reference_logps = torch.stack([ref_chosen, ref_rejected], dim=1).reshape(-1)
    policy = ws.load_policy()
    reference = ws.reference_for(policy)
    labels = torch.tensor(desirable)

    def step(index: list[int]):
        batch = policy.encode([prompts[i] for i in index], [completions[i] for i in index],
                              [eos[i] for i in index])
        cycled = index[-1:] + index[:-1]  # prompt of example k with the completion of example k-1
        mismatched = policy.encode([prompts[i] for i in index], [completions[i] for i in cycled],
                                   [eos[i] for i in cycled])
        ws.budget.add_batch(batch)
        with torch.no_grad():
            kl = kl_reference_point(policy.sequence_logprobs(mismatched),
                                    reference.sequence_logprobs(mismatched))
        logps = policy.sequence_logprobs(batch)
        good = labels[index].to(policy.device)
        losses, rewards = kto_loss(logps, reference_logps[index].to(policy.device), good, kl, beta=cfg.beta,
                                   desirable_weight=cfg.desirable_weight,
                                   undesirable_weight=cfg.undesirable_weight)
        metrics = {"kl": kl, "rewards/desirable": _masked_mean(rewards, good),
                   "rewards/undesirable": _masked_mean(rewards, ~good)}
        return losses.mean(), metrics

    fit(ws.ctx, policy.trainable_parameters(), batch_indices(len(prompts), cfg, ws.train_seed), step, cfg,
        stage="kto", models=[policy.model], trace=policy)
    return policy


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; 0 when there are none (a batch may hold only one kind)."""
    return values[mask].mean() if mask.any() else values.new_zeros(())
