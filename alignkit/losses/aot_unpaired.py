"""AOT, unpaired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport"):
the distribution of chosen log-ratios should dominate that of rejected ones, pairs ignored."""

import torch
import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("aot_unpaired", bounds={"label_smoothing": {"ge": 0.0, "le": 0.5}})
def aot_unpaired_loss(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """-(1-eps) log sig(beta d_k) - eps log sig(-beta d_k), d = sort(log-ratios of chosen) - sort(log-ratios
    of rejected), each sorted ascending over the batch (log-ratio = log pi - log pi_ref).

    Batch-level, as in trl: ``losses[k]`` compares the k-th smallest chosen log-ratio with the k-th smallest
    rejected one, not pair k, so only the mean is meaningful and it depends on the batch's composition.
    The implicit rewards are per pair, unsorted. Equals trl 1.16's ``aot_unpaired``."""
    chosen, rejected = log_ratios(logps)
    delta = torch.sort(chosen, dim=0).values - torch.sort(rejected, dim=0).values
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(
        -beta * delta
    )
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
