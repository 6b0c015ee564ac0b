"""SFT on the chosen completions (negative log-likelihood), as trl's ``sft`` loss type: usually combined
with a preference loss (e.g. RPO, Pang et al. 2024, "Iterative Reasoning Preference Optimization")."""

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("sft")
def sft_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """-sum_i log pi(y_c,i) / sum_i len(y_c,i): the mean NLL per chosen token over the whole batch.

    Batch-level, as in trl 1.16: tokens are averaged over the batch (long completions weigh more), and that
    one scalar is repeated for every pair, so ``losses[k]`` is the batch's loss, not pair k's, and the mean
    equals trl's. Rejected completions and the reference do not enter the loss; beta only scales the
    logged implicit rewards."""
    total = logps.policy_chosen.sum() / logps.chosen_lengths.sum().clamp(min=1)
    losses = (-total).expand(logps.policy_chosen.shape[0])
    return LossOutput(losses, *implicit_rewards(*log_ratios(logps), beta))
