"""Example loss plugin: SPPO-hard (Wu et al. 2024), written the way a user would add their own loss.

Drop a file like this into ``plugins/`` (or pass ``--plugins path/to/file.py``, or list it under a
recipe's ``plugins:``), and select it with ``dpo.loss: sppo_hard``. ``alignkit list`` shows it.
"""

from alignkit import register_loss
from alignkit.losses import LossOutput, PreferenceLogps, implicit_rewards, log_ratios


@register_loss("sppo_hard")
def sppo_hard_loss(logps: PreferenceLogps, *, beta: float) -> LossOutput:
    """Squared regression of each log-ratio to +-1/(2 beta): chosen up, rejected down, independently."""
    chosen, rejected = log_ratios(logps)
    losses = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    return LossOutput(losses, *implicit_rewards(chosen, rejected, beta))
