"""Every shipped recipe loads into its config class (no unknown keys, right types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftt.config import load_config
from rftt.evaluate import EvalConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CONFIG_BY_PREFIX = {"eval_": EvalConfig}


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.name)
def test_recipe_loads(recipe):
    [config_class] = [cls for prefix, cls in CONFIG_BY_PREFIX.items() if recipe.name.startswith(prefix)]
    config = load_config(config_class, recipe)
    config.sampling_params()
