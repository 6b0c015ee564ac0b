"""What an RL method (PPO, GRPO, RLOO) maximises: one set of reward settings, checked and resolved once."""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.config import option


@dataclass
class RewardSettings:
    """The reward an RL method optimises: the shared learned reward model (optionally loaded in 4-bit to
    save memory) or the gold reward itself."""

    reward: str = option("reward_model", "what is maximised: the shared learned reward model, or the gold "
                                         "reward (PPO-GT)", choices=("reward_model", "gold"))
    reward_model_4bit: bool = option(False, "score with the reward model's backbone in NF4 4-bit (bitsandbytes): "
                                            "the frozen scorer in about a quarter of the memory")

    def check(self):
        if self.reward_model_4bit and self.reward == "gold":
            yield "reward_model_4bit", "reward: gold uses no reward model"


def reward_needs(cfg: RewardSettings) -> tuple[str, ...]:
    """Shared artifacts an RL method builds and times before training: the reward model (full or 4-bit) and
    the pairs it learns from, unless it optimises the gold reward."""
    if cfg.reward == "gold":
        return ()
    return ("train_pairs", "reward_model_4bit" if cfg.reward_model_4bit else "reward_model")
