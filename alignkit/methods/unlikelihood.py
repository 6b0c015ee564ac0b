"""Unlikelihood, a DPO-paper baseline (Rafailov et al. 2023, Fig. 2): unlikelihood training (Welleck et al.
2019) on the preference pairs, i.e. maximum likelihood on the chosen completion plus alpha * log(1 - p) on
each rejected token, with no reference model and no KL. It shows what pushing the rejected text down by
itself does; at high alpha it degenerates into meaningless text, as the DPO paper reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.artifacts import Artifact
from alignkit.config import option
from alignkit.losses.unlikelihood import unlikelihood_loss
from alignkit.models.pairs import pair_batch
from alignkit.registry import register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig, batch_indices, fit


@dataclass
class UnlikelihoodConfig(TrainingConfig):
    """Likelihood on chosen completions, unlikelihood on rejected ones."""

    lr: float = option(5e-4, "peak learning rate (AdamW)", gt=0)
    alpha: float = option(1.0, "weight of the unlikelihood term, -mean_t log(1 - p) over the rejected "
                               "completion's tokens (0: likelihood on the chosen completions only)", ge=0)


@register_method("unlikelihood", config=UnlikelihoodConfig, needs=(Artifact.TRAIN_PAIRS,))
def train_unlikelihood(ws: Workspace, cfg: UnlikelihoodConfig):
    """Unlikelihood (Welleck et al. 2019): likelihood on chosen, unlikelihood on rejected (DPO baseline)."""
    data = ws.train_pairs
    policy = ws.load_policy()
    append_eos = ws.recipe.preferences.append_eos

    def step(index: list[int]):
        batch = pair_batch(policy, data, index, append_eos)  # chosen rows, then rejected rows
        ws.budget.add_batch(batch)
        chosen, rejected = policy.token_logprobs(batch).chunk(2)
        chosen_mask, rejected_mask = batch.target_mask.chunk(2)
        losses, metrics = unlikelihood_loss(chosen, chosen_mask, rejected, rejected_mask, alpha=cfg.alpha)
        return losses.mean(), metrics

    fit(ws.ctx, policy.trainable_parameters(), batch_indices(len(data), cfg, ws.train_seed), step, cfg,
        stage="unlikelihood", models=[policy.model], trace=policy)
    return policy
