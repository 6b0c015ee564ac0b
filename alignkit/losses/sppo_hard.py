"""SPPO, hard-label form (Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment"):
each log-ratio is regressed to its own target, chosen up and rejected down, with no pairwise margin."""

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("sppo_hard")
def sppo_hard_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """(ratio_c - 1/(2 beta))^2 + (ratio_r + 1/(2 beta))^2, ratio = log(pi / pi_ref) per response.

    The paper's targets are +-(P(win) - 1/2)/beta with P estimated by a preference model (PairRM); the
    hard form sets P = 1 for the chosen and 0 for the rejected completion. Equals trl 1.16's ``sppo_hard``."""
    chosen, rejected = log_ratios(logps)
    losses = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
