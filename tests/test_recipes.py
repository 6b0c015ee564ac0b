"""Every bundled recipe validates, names a registered method, and opens with its own run command."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def test_the_documented_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"dpo_imdb.yaml", "ppo_imdb.yaml", "rm_imdb.yaml", "sft_imdb.yaml", "preferred_ft_imdb.yaml",
            "best_of_n_imdb.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_documents_its_command(path):
    recipe = load_recipe(path)
    assert recipe.method_config(recipe.method) is not None
    assert path.read_text().splitlines()[0] == f"# alignkit run recipes/{path.name}"


def test_recipes_of_one_task_share_the_same_preference_pairs():
    """Fair comparison: DPO, the reward model (PPO, Best-of-N) and Preferred-FT read the same pairs."""
    pairs = {p.name: load_recipe(p).preferences for p in RECIPES if p.name != "sft_imdb.yaml"}
    assert len({repr(v) for v in pairs.values()}) == 1, pairs
