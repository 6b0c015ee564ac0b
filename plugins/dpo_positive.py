"""Example loss plugin: DPO-Positive (Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference
Optimisation with DPO-Positive"), a loss trl does not have, written the way a user adds their own.

Drop a file like this into ``plugins/`` (or pass ``--plugins path/to/file.py``, or list it under a recipe's
``plugins:``), select it with ``dpo.loss: dpop`` and set its parameter with ``dpo.loss_params: {lam: 50}``.
``alignkit list`` shows it; a recipe is checked against its signature and bounds at load.
"""

import torch
import torch.nn.functional as F

from alignkit import register_loss
from alignkit.losses import LossOutput, PreferenceLogps, implicit_rewards, log_ratios


@register_loss("dpop", bounds={"lam": {"ge": 0.0}})
def dpo_positive_loss(logps: PreferenceLogps, *, beta: float, lam: float = 50.0) -> LossOutput:
    """DPO whose margin is cut by lam * max(0, log pi_ref(y_c) - log pi(y_c)): the chosen completion may
    not lose likelihood, which plain DPO allows when both completions are pushed down (paper Eq. 3)."""
    chosen, rejected = log_ratios(logps)
    penalty = torch.clamp(-chosen, min=0)
    losses = -F.logsigmoid(beta * (chosen - rejected - lam * penalty))
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
