"""IPO (Azar et al. 2023, Eq. 17): regress the log-ratio margin to 1/(2 beta) instead of pushing it
to infinity."""

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("ipo")
def ipo_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """(margin / length - 1/(2 beta))^2 with per-token (length-averaged) log-ratios, as trl and the IPO
    authors use, so that beta means the same for short and long completions."""
    chosen, rejected = log_ratios(logps)
    margin = chosen / logps.chosen_lengths.clamp(min=1) - rejected / logps.rejected_lengths.clamp(min=1)
    losses = (margin - 1 / (2 * beta)) ** 2
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
