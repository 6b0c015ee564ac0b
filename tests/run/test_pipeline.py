"""The run pipeline (alignkit.pipeline): what a method declares it needs is typed, and a plugin's needs given
as names are checked against the artifacts a workspace can build."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from alignkit.artifacts import Artifact
from alignkit.errors import AlignkitError
from alignkit.registry import METHODS, load_plugins, register_method
from alignkit.run.pipeline import method_needs


@dataclass
class _Empty:
    pass


def test_builtin_needs_are_artifacts():
    load_plugins(scan_default_dirs=False)
    dpo = METHODS.entry("dpo").meta["config"]()
    assert method_needs("dpo", dpo) == (Artifact.TRAIN_PAIRS, Artifact.REFERENCE_LOGPS)
    simpo = METHODS.entry("dpo").meta["config"](loss="simpo")
    assert method_needs("dpo", simpo) == (Artifact.TRAIN_PAIRS,)  # SimPO reads no reference log-probs
    assert method_needs("sft", METHODS.entry("sft").meta["config"]()) == ()


def test_plugin_needs_given_as_names_are_checked():
    register_method("test-needs-names", config=_Empty, needs=("train_pairs", "reward_model"))(lambda ws,
                                                                                              cfg: None)
    assert method_needs("test-needs-names", _Empty()) == (Artifact.TRAIN_PAIRS, Artifact.REWARD_MODEL)
    register_method("test-needs-typo", config=_Empty, needs=("train_pair",))(lambda ws, cfg: None)
    with pytest.raises(AlignkitError,
                       match="method 'test-needs-typo' declares an unknown need: 'train_pair' is not "
                                            "a valid Artifact \\(known: train_pairs, reward_model"):
        method_needs("test-needs-typo", _Empty())
