"""The learned reward model (InstructGPT's RM): a scalar head on the SFT backbone trained with the
Bradley-Terry loss on preference pairs, then shifted so that rewards have mean 0 on the training prompts.

With ``model.lora`` the reward model trains a LoRA adapter and the head on the (optionally 4-bit) backbone
and saves as that adapter (:meth:`~alignkit.models.scalar_head.ScalarModel.from_backbone`).

Batches are made of whole prompt groups, so all K-choose-2 pairs of a prompt share one optimiser step and
the loss averages them per prompt; each distinct completion goes through the model once per step however
many pairs it appears in. Accuracy is measured on held-out prompt groups against the gold labels.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr
from torch import Tensor

from alignkit.artifacts import Artifact
from alignkit.config import option
from alignkit.data.preferences import PreferenceData, as_pairs
from alignkit.data.unpaired import UnpairedData
from alignkit.errors import DataError
from alignkit.losses.bradley_terry import bradley_terry_loss
from alignkit.models.scalar_head import ScalarModel, Scorer
from alignkit.registry import register_method
from alignkit.stages.workspace import Workspace
from alignkit.training import TrainingConfig, batch_indices, fit


@dataclass
class RewardModelConfig(TrainingConfig):
    """Reward-model training settings (a Bradley-Terry scalar head on the SFT backbone)."""

    # measured on the IMDb task (tiny-gpt2-imdb, K=4): 1e-4 stays at chance after an epoch, 2e-3 is worse
    lr: float = option(1e-3, "peak learning rate (AdamW)", gt=0)
    batch_size: int = option(8, "prompt groups per optimiser step (each with all its K-choose-2 pairs)", ge=1)
    epochs: float = option(2.0, "passes over the training prompts (fractions allowed; more overfits)", gt=0)
    eval_batch_size: int = option(64, "completions per forward pass when scoring without gradients", ge=1)


def unique_completions(data: PreferenceData, append_eos: bool, index: list[int] | None = None):
    """The distinct (prompt, completion, ends-with-EOS) items of ``data``'s pairs, and where each pair's
    chosen and rejected completion sit among them [N, 2]."""
    index = list(range(len(data))) if index is None else index
    chosen_eos, rejected_eos = data.eos_flags(index, append_eos)
    keys = [key for j, i in enumerate(index)
            for key in ((data.prompts[i], data.chosen[i], chosen_eos[j]),
                        (data.prompts[i], data.rejected[i], rejected_eos[j]))]
    position: dict[tuple[str, str], int] = {}
    for key in keys:
        position.setdefault(key, len(position))
    return list(position), torch.tensor([position[k] for k in keys], dtype=torch.long).view(-1, 2)


@torch.no_grad()
def score_pairs(scorer: Scorer, data: PreferenceData, append_eos: bool):
    """Chosen and rejected scores of every pair [N], [N] (on CPU), plus the distinct items and
    their scores."""
    items, where = unique_completions(data, append_eos)
    scores = scorer([p for p, _, _ in items], [c for _, c, _ in items], [e for _, _, e in items]).cpu()
    return scores[where[:, 0]], scores[where[:, 1]], items, scores


def pair_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    margin = (chosen - rejected).detach()
    return {"accuracy": (margin > 0).float().mean(), "margin": margin.mean()}


def fit_reward_model(ws: Workspace, cfg: RewardModelConfig, train: PreferenceData | UnpairedData,
                     heldout: PreferenceData | UnpairedData) -> "TrainedRewardModel":
    """Train a reward model on ``train`` (evaluated later on ``heldout``): the shared reward model on the
    training pairs, the heldout-reward-model judge on its judge split. Unpaired rows (prompt, completion,
    label) are paired as a judge's agreement pairs them (:func:`~alignkit.data.preferences.as_pairs`)."""
    unpaired, rows = isinstance(train, UnpairedData), len(train)
    train, heldout = as_pairs(train), as_pairs(heldout)
    if unpaired and not len(train):
        raise DataError(f"{ws.recipe.preferences.source}: none of the {rows} unpaired rows the reward model "
                        f"trains on shares its prompt with a row of the other label, so there is no pair to "
                        f"learn from (give some prompts both a desirable and an undesirable completion)")
    append_eos = ws.recipe.preferences.append_eos
    torch.manual_seed(ws.train_seed)
    scalar = ScalarModel.from_backbone(ws.recipe.model, cache_dir=ws.cache_dir, runtime=ws.runtime)
    scorer = Scorer(scalar, ws.recipe.model, cfg.eval_batch_size)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(train.group):
        members[g].append(i)
    groups = list(members.values())

    def step(group_index: list[int]):
        index = [i for g in group_index for i in groups[g]]
        items, where = unique_completions(train, append_eos, index)
        batch = scorer.encode([p for p, _, _ in items], [c for _, c, _ in items], [e for _, _, e in items])
        ws.budget.add_batch(batch)
        scores = scalar.sequence_scores(batch)
        chosen, rejected = scores[where[:, 0].to(scores.device)], scores[where[:, 1].to(scores.device)]
        group = torch.tensor([train.group[i] for i in index], device=scores.device)
        return bradley_terry_loss(chosen, rejected, group), pair_metrics(chosen, rejected)

    fit(ws.ctx, scalar.parameters(), batch_indices(len(groups), cfg, ws.train_seed), step, cfg,
        stage="reward_model", models=[scalar.model])
    train_chosen, train_rejected, _, train_scores = score_pairs(scorer, train, append_eos)
    scalar.bias += float(train_scores.double().mean())  # scores above were taken at the old bias
    train_accuracy = float((train_chosen > train_rejected).float().mean())
    ws.ctx.log.log("reward_model", cfg.total_steps(len(groups)), {"bias": scalar.bias,
                                                                  "train_accuracy": train_accuracy})
    return TrainedRewardModel(scalar, scorer, heldout, append_eos, n_train=len(train),
                              train_accuracy=train_accuracy)


@register_method("reward_model", config=RewardModelConfig, needs=(Artifact.TRAIN_PAIRS,),
                 fit_on=fit_reward_model,
                 trains_policy=False)
def train_reward_model(ws: Workspace, cfg: RewardModelConfig) -> "TrainedRewardModel":
    """Bradley-Terry reward model: a scalar head on the SFT backbone, rewards centred on the
    training prompts."""
    return fit_reward_model(ws, cfg, ws.train_pairs, ws.heldout_pairs)


class TrainedRewardModel:
    """The trained scalar model and its held-out pairs; saves as a ScalarModel folder."""

    def __init__(self, scalar: ScalarModel, scorer: Scorer, heldout: PreferenceData, append_eos: bool, *,
                 n_train: int, train_accuracy: float):
        self.scalar, self.scorer, self.heldout, self.append_eos = scalar, scorer, heldout, append_eos
        self.n_train, self.train_accuracy = n_train, train_accuracy

    def save(self, folder) -> None:
        self.scalar.save(folder)

    def evaluate(self, ws: Workspace) -> tuple[dict, list[dict]]:
        """Pairwise accuracy on held-out and training pairs (labels from the gold reward), the reward
        scale, and the rank correlation with the gold scores; one sample row per held-out pair."""
        data = self.heldout
        if not len(data):
            return {"method": "reward_model", "heldout_pairwise_accuracy": None, "n_heldout_pairs": 0,
                    "train_pairwise_accuracy": self.train_accuracy, "n_train_pairs": self.n_train,
                    "reward_bias": self.scalar.bias}, []
        chosen, rejected, items, scores = score_pairs(self.scorer, data, self.append_eos)
        summary = {
            "method": "reward_model",
            "heldout_pairwise_accuracy": float((chosen > rejected).float().mean()),
            "train_pairwise_accuracy": self.train_accuracy,
            "n_heldout_pairs": len(data),
            "n_train_pairs": self.n_train,
            "reward_bias": self.scalar.bias,
            "heldout_reward_mean": float(scores.double().mean()),
            "heldout_reward_margin": float((chosen - rejected).double().mean()),
        }
        has_gold = data.chosen_scores is not None
        if has_gold:
            summary["spearman_vs_gold"] = spearman_vs_gold(data, items, scores)
        samples = [{"prompt": data.prompts[i], "chosen": data.chosen[i], "rejected": data.rejected[i],
                    "rm_chosen": float(chosen[i]), "rm_rejected": float(rejected[i]),
                    "gold_chosen": data.chosen_scores[i] if has_gold else None,
                    "gold_rejected": data.rejected_scores[i] if has_gold else None} for i in range(len(data))]
        return summary, samples


def spearman_vs_gold(data: PreferenceData, items: list[tuple[str, str, bool]],
                     scores: Tensor) -> float | None:
    """Spearman rank correlation between RM scores and gold scores over the distinct completions (None
    when undefined: fewer than two completions or constant scores)."""
    gold = {}
    for i in range(len(data)):
        gold[(data.prompts[i], data.chosen[i])] = data.chosen_scores[i]
        gold[(data.prompts[i], data.rejected[i])] = data.rejected_scores[i]
    gold_scores = [gold[(p, c)] for p, c, _ in items]
    if len(set(gold_scores)) < 2 or len(set(scores.tolist())) < 2:
        return None
    return float(spearmanr(scores.numpy(), gold_scores).statistic)
