"""The reward model's Bradley-Terry loss (InstructGPT, Ouyang et al. 2022, Eq. 1).

Under the Bradley-Terry model a labeller prefers completion w over l with probability
sigma(r_w - r_l), so maximum likelihood minimises -log sigma(r_w - r_l) = log(1 + exp(-(r_w - r_l))).
For scores 2 (chosen) and 0 (rejected) that is log(1 + e^-2) = 0.126928; for a tie it is log 2 = 0.693147.

When each prompt has K ranked completions, all K-choose-2 pairs are used, but they are not independent:
a prompt with K=4 gives 6 pairs and would otherwise count 6 times as much as a prompt with one pair (and
overfit its completions, each of which appears in K-1 pairs). InstructGPT therefore averages the loss
within each prompt first, then across prompts; ``group`` names each pair's prompt.

A plain function, not a registered DPO-family loss: it takes reward-model scores, not log-probs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def group_mean(values: Tensor, group: Tensor | None = None) -> Tensor:
    """Mean over groups of the per-group mean of ``values`` [N]; without ``group``, the plain mean."""
    if group is None:
        return values.mean()
    _, inverse = torch.unique(group.to(values.device), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add(0, inverse, values)
    counts = torch.bincount(inverse, minlength=n_groups).to(values.dtype)
    return (sums / counts).mean()


def bradley_terry_losses(chosen_scores: Tensor, rejected_scores: Tensor) -> Tensor:
    """Per-pair loss -log sigma(r_w - r_l) [N] (computed stably with logsigmoid)."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


def bradley_terry_loss(chosen_scores: Tensor, rejected_scores: Tensor, group: Tensor | None = None) -> Tensor:
    """Scalar Bradley-Terry loss over pairs [N], averaged within each prompt ``group`` then across groups
    (every prompt weighs the same however many pairs it has); without ``group``, the mean over pairs."""
    if chosen_scores.shape != rejected_scores.shape:
        raise ValueError(f"chosen scores {tuple(chosen_scores.shape)} and rejected scores "
                         f"{tuple(rejected_scores.shape)} differ in shape")
    return group_mean(bradley_terry_losses(chosen_scores, rejected_scores), group)
