"""BCO, pairwise form (Jung et al. 2024, "Binary Classifier Optimization for Large Language Model
Alignment"): chosen and rejected responses classified independently by their implicit reward."""

import torch.nn.functional as F

from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios
from alignkit.registry import register_loss


@register_loss("bco_pair")
def bco_pair_loss(logps: PreferenceLogps, *, beta: float, reward_shift: float = 0.0) -> LossOutput:
    """-log sig(r_c - delta) - log sig(-(r_r - delta)), r = beta * log(pi / pi_ref), delta = reward_shift.

    The paper's delta is a running mean of the implicit rewards (over chosen and rejected, across steps),
    which a pure function cannot keep. Here it is an explicit constant, ``reward_shift`` (default 0), that
    the caller may set; nothing is estimated from the batch. With the default this equals trl 1.16's
    ``bco_pair`` exactly: trl 1.16 has dropped the running mean too (its ``bco_pair`` is the delta = 0
    form). Earlier trl releases kept a ``RunningMoments`` estimate of the mean batch reward, updated
    before each step and subtracted as delta, which this function does not reproduce."""
    chosen, rejected = log_ratios(logps)
    r_chosen, r_rejected = beta * chosen - reward_shift, beta * rejected - reward_shift
    losses = -F.logsigmoid(r_chosen) - F.logsigmoid(-r_rejected)
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
