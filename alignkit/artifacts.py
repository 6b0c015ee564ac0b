"""The shared artifacts a method can declare it needs (:class:`Artifact`), built and timed by the run before
the method trains, and the one decision of which reward an RL method or Best-of-N maximises
(:class:`RewardSettings`), which implies the artifacts it needs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Union

from alignkit.config import option
from alignkit.errors import AlignkitError


class Artifact(str, Enum):
    """A shared stage of a run's workspace (:meth:`~alignkit.stages.workspace.Workspace.resolve`
    builds it)."""

    # the preference pairs methods learn from (and their held-out split)
    TRAIN_PAIRS = "train_pairs"
    REWARD_MODEL = "reward_model"            # the Bradley-Terry reward model trained on them
    REWARD_MODEL_4BIT = "reward_model_4bit"  # the same reward model with an NF4 4-bit backbone
    REFERENCE_LOGPS = "reference_logps"      # pi_ref's log-probs of every training pair

    @property
    def stage(self) -> str:
        """The stage's name in the run's timings (``reward model``)."""
        return self.value.replace("_", " ")


Needs = Union[tuple[Artifact, ...], Callable[[object], Iterable[Union[Artifact, str]]]]


def as_artifacts(names: Iterable[Union[Artifact, str]], method: str) -> tuple[Artifact, ...]:
    """A method's declared needs as artifacts (a plugin may name them as strings); an unknown one is
    one line."""
    try:
        return tuple(Artifact(name) for name in names)
    except ValueError as exc:
        known = ", ".join(a.value for a in Artifact)
        raise AlignkitError(f"method {method!r} declares an unknown need: {exc} (known: {known})") from None


@dataclass
class RewardSettings:
    """The reward an RL method (PPO, GRPO, RLOO) or Best-of-N maximises: the shared learned reward model
    (optionally loaded in 4-bit to save memory) or the gold reward itself."""

    reward: str = option("reward_model", "what is maximised: the shared learned reward model, or the gold "
                                         "reward (PPO-GT)", choices=("reward_model", "gold"))
    reward_model_4bit: bool = option(False,
                                     "score with the reward model's backbone in NF4 4-bit (bitsandbytes): "
                                            "the frozen scorer in about a quarter of the memory")

    def check(self):
        if self.reward_model_4bit and self.reward == "gold":
            yield "reward_model_4bit", "reward: gold uses no reward model"


def reward_needs(cfg: RewardSettings) -> tuple[Artifact, ...]:
    """The shared artifacts a reward implies: the reward model (full or 4-bit) and the pairs it learns from,
    unless the method maximises the gold reward."""
    if cfg.reward == "gold":
        return ()
    return (Artifact.TRAIN_PAIRS,
            Artifact.REWARD_MODEL_4BIT if cfg.reward_model_4bit else Artifact.REWARD_MODEL)
