"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"): supervised
fine-tuning on the chosen completion plus a log odds-ratio term that favours it over the rejected one, in
one reference-free loss (no SFT stage and no reference model)."""

import torch
import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps
from alignkit.losses.simpo import average_logps
from alignkit.registry import register_loss


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) for p = exp(avg_logp) < 1, computed stably from the log-prob."""
    return avg_logp - torch.log(-torch.expm1(avg_logp))


@register_loss("orpo", uses_reference=False)
def orpo_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """-log P(y_c)/|y_c| - beta * log sig(log odds(y_c) - log odds(y_r)) (paper Eqs. 6-7, beta = lambda),
    odds(y) = P(y) / (1 - P(y)) with P(y) = exp of the mean token log-prob.

    The NLL term is each chosen completion's mean per-token NLL given its prompt (the paper's L_SFT per
    example). trl's experimental ORPO averages it over every chosen token of the batch, prompt tokens
    included; its odds-ratio term, ``beta * log sig(log odds ratio)``, equals this one. Implicit rewards
    are beta * mean log-prob, as trl logs them."""
    chosen, rejected = average_logps(logps)
    odds_ratio = F.logsigmoid(log_odds(chosen) - log_odds(rejected))
    losses = -chosen - beta * odds_ratio
    return LossOutput(losses, beta * chosen.detach(), beta * rejected.detach())
