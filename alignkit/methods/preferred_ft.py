"""Preferred-FT, the DPO paper's simplest preference baseline: maximum likelihood on the chosen
completions given their prompts. The rejected completions are never used.

It is also the DPO paper's recipe for pi_ref when no SFT model exists (Rafailov et al. 2023, sec. 4):
fine-tune the base model on the preferred completions so that the reference sits close to the data's
distribution, then point ``model.name_or_path`` of a DPO recipe at this run's ``model/`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.artifacts import Artifact
from alignkit.config import option
from alignkit.models.finetune import finetune_on_completions
from alignkit.registry import register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig


@dataclass
class PreferredFTConfig(TrainingConfig):
    """Supervised fine-tuning on the preferred (chosen) completions."""

    lr: float = option(5e-4, "peak learning rate (AdamW)", gt=0)
    deduplicate: bool = option(True, "fit each distinct (prompt, chosen) once; false weights a completion by "
                                     "the number of pairs it wins (K completions per prompt give K-1 to the "
                                     "best)")


def chosen_examples(data, deduplicate: bool, append_eos: bool) -> tuple[list[str], list[str], list[bool]]:
    """The (prompt, chosen, ends-with-EOS) examples to fit, in data order, optionally without repeats."""
    eos, _ = data.eos_flags(range(len(data)), append_eos)
    examples = list(zip(data.prompts, data.chosen, eos))
    if deduplicate:
        examples = list(dict.fromkeys(examples))
    return [p for p, _, _ in examples], [c for _, c, _ in examples], [e for _, _, e in examples]


@register_method("preferred_ft", config=PreferredFTConfig, needs=(Artifact.TRAIN_PAIRS,))
def train_preferred_ft(ws: Workspace, cfg: PreferredFTConfig):
    """Preferred-FT: maximum likelihood on the chosen completions given their prompts (DPO paper baseline)."""
    policy = ws.load_policy()
    prompts, chosen, eos = chosen_examples(ws.train_pairs, cfg.deduplicate, ws.recipe.preferences.append_eos)
    # the loss covers completion tokens only: prompts are conditioning, not targets
    finetune_on_completions(ws.ctx, policy, prompts, chosen, cfg, stage="preferred_ft", seed=ws.train_seed,
                            eos=eos)
    return policy
