"""Preference losses: pure functions of per-sequence log-probs, one module each, found by name in the
loss registry. Importing this package registers the built-ins."""

from alignkit.losses import (  # noqa: F401  (registration)
    aot,
    aot_unpaired,
    apo_down,
    apo_zero,
    bco_pair,
    discopop,
    exo_pair,
    hinge,
    ipo,
    nca_pair,
    orpo,
    robust,
    sft,
    sigmoid,
    sigmoid_norm,
    simpo,
    sppo_hard,
)
from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios, loss_parameters

__all__ = ["LossOutput", "PreferenceLogps", "implicit_rewards", "log_ratios", "loss_parameters"]
