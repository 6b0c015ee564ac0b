"""EXO, pairwise form (Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment",
Eq. 16): reverse KL from the policy's preference distribution to the label distribution."""

import math

import torch
import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("exo_pair", bounds={"label_smoothing": {"gt": 0.0, "lt": 1.0}})
def exo_pair_loss(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 1e-3) -> LossOutput:
    """KL(q || p) over {chosen, rejected}: q = (sig(beta m), sig(-beta m)), p = (1 - eps, eps), m the
    log-ratio margin, i.e. ``sig(beta m) (log sig(beta m) - log(1-eps)) + sig(-beta m) (log sig(-beta m) - log
    eps)``.

    eps = label_smoothing must be > 0 (log eps); the default 1e-3 is the paper's recommendation (trl's
    ``label_smoothing`` defaults to 0, which trl rejects for ``exo_pair``). Equals trl 1.16's ``exo_pair``
    with its default ``f_divergence_type='reverse_kl'``."""
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair loss: label_smoothing must lie in (0, 1), got {label_smoothing}")
    chosen, rejected = log_ratios(logps)
    margin = beta * (chosen - rejected)
    losses = (torch.sigmoid(margin) * (F.logsigmoid(margin) - math.log1p(-label_smoothing))
              + torch.sigmoid(-margin) * (F.logsigmoid(-margin) - math.log(label_smoothing)))
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
