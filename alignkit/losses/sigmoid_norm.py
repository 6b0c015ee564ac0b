"""Length-normalised DPO: DPO's logistic loss (Rafailov et al. 2023, Eq. 7) on per-token (length-averaged)
log-ratios, as in trl's ``sigmoid_norm`` (cf. the length normalisation of SimPO, Meng et al. 2024)."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("sigmoid_norm")
def sigmoid_norm_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """-log sig(beta * (ratio_c / len_c - ratio_r / len_r)), ratio = log(pi / pi_ref) summed over the
    completion, len its token count (at least 1). Equals trl 1.16's ``sigmoid_norm`` with its default
    ``f_divergence_type='reverse_kl'``. The implicit rewards stay unnormalised, beta * ratio, as trl logs."""
    chosen, rejected = log_ratios(logps)
    margin = chosen / logps.chosen_lengths.clamp(min=1) - rejected / logps.rejected_lengths.clamp(min=1)
    losses = -F.logsigmoid(beta * margin)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
