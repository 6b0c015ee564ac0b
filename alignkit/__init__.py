"""alignkit: LLM alignment methods side by side (reward model + PPO, DPO and its variants) on shared
data, one policy abstraction and one evaluator."""

__version__ = "0.1.0"

from alignkit.registry import (  # noqa: E402
    register_dataset,
    register_loss,
    register_method,
    register_model,
    register_reward,
)

__all__ = [
    "__version__",
    "register_dataset",
    "register_loss",
    "register_method",
    "register_model",
    "register_reward",
]
