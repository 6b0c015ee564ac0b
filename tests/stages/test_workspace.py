"""The workspace (alignkit.stages): its public constructor, what may be provided instead of built, the shared
artifacts a method declares, the one decision of which reward an RL method maximises, and that only the stage
builder writes it while methods and judges read a narrow view."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from tiny import make_workspace

import alignkit
from alignkit.artifacts import Artifact, RewardSettings
from alignkit.data.preferences import PreferenceData
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe
from alignkit.stages.builder import StageBuilder
from alignkit.stages.workspace import Workspace

PAIRS = PreferenceData(prompts=["a", "a", "b", "b", "c", "c"], chosen=["x", "y", "x", "y", "x", "y"],
                       rejected=["z", "w", "z", "w", "z", "w"], group=[0, 0, 1, 1, 2, 2])
PACKAGE = Path(alignkit.__file__).parent


@pytest.fixture
def ws(tmp_path, imdb_model_dir):
    recipe = load_recipe(None, ["method=dpo", f"model.name_or_path={imdb_model_dir}", "device=cpu",
                                "preferences.heldout_fraction=0.34"])
    return make_workspace(recipe, cache_dir=tmp_path / "cache")


def test_provide_takes_known_artifacts_and_names_the_rest(ws):
    gold = lambda prompts, completions: np.zeros(len(prompts))  # noqa: E731
    assert ws.provide(gold=gold, preferences=PAIRS).gold is gold
    with pytest.raises(AlignkitError,
                       match="cannot provide pairs \\(can: gold, judge, preferences, proxy_reward"):
        ws.provide(pairs=PAIRS)


def test_resolving_the_training_pairs_splits_them_by_prompt_group(ws):
    ws.provide(preferences=PAIRS)
    assert not ws.has_pairs
    train = ws.resolve(Artifact.TRAIN_PAIRS)
    assert ws.has_pairs and train is ws.train_pairs
    assert len(train) + len(ws.heldout_pairs) == len(PAIRS)
    assert not set(train.group) & set(ws.heldout_pairs.group)  # a prompt's pairs sit on one side only


def test_reward_for_is_none_for_gold_and_the_asked_reward_model_otherwise(ws):
    full, quantized = object(), object()
    ws.provide(proxy_reward=full, proxy_reward_4bit=quantized)  # stand-ins for the built scorers
    assert ws.reward_for(RewardSettings(reward="gold")) is None
    assert ws.reward_for(RewardSettings()) is full
    assert ws.reward_for(RewardSettings(reward_model_4bit=True)) is quantized


def test_a_shared_stage_counts_into_its_own_budget(ws):
    ws.budget.steps = 3
    with ws._shared_stage() as budget:
        budget.steps += 7
        assert ws.budget is budget and ws.ctx.checkpointer is None and ws.ctx.trace is None
    assert ws.budget.steps == 3


WORKSPACE_NAMES = {"ws", "workspace"}  # what methods, judges and the run call a workspace


def _is_workspace(node) -> bool:
    """``ws``, ``workspace``, ``self.ws`` or ``self.workspace``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr in WORKSPACE_NAMES
    return isinstance(node, ast.Name) and node.id in WORKSPACE_NAMES


def _workspace_writes(tree: ast.AST) -> list[str]:
    """Assignments to a workspace's attribute or to an item of one (``ws.x = ...``, ``ws.x["k"][j] = ...``),
    ``setattr(ws, ...)`` and any use of a workspace's ``__dict__``."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            inner = target
            while isinstance(inner, ast.Subscript):
                inner = inner.value
            if isinstance(inner, ast.Attribute) and _is_workspace(inner.value):
                found.append(f"{node.lineno}: {ast.unparse(target)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args:
            if _is_workspace(node.args[0]):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and node.attr == "__dict__" and _is_workspace(node.value):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_the_stage_builder_writes_a_workspace():
    outside = {str(path.relative_to(PACKAGE)): _workspace_writes(ast.parse(path.read_text()))
               for path in PACKAGE.rglob("*.py") if path.parent.name != "stages"}
    assert not {path: lines for path, lines in outside.items() if lines}


def test_methods_and_judges_read_only_the_view(ws):
    view = {name for name in vars(Workspace) if not name.startswith("_")}
    builder = set(dir(StageBuilder)) | set(vars(ws))
    assert view <= builder, view - builder
    read = {node.attr for folder in ("methods", "rewards") for path in (PACKAGE / folder).glob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and _is_workspace(node.value)}
    assert read <= view, read - view
