"""Preference losses: pure functions of per-sequence log-probs, one module each, found by name in the
loss registry. Importing this package registers the built-ins."""

from alignkit.losses import hinge, ipo, robust, sigmoid  # noqa: F401  (registration)
from alignkit.losses.base import LossOutput, PreferenceLogps, implicit_rewards, log_ratios, loss_parameters

__all__ = ["LossOutput", "PreferenceLogps", "implicit_rewards", "log_ratios", "loss_parameters"]
