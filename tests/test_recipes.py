"""Every shipped recipe loads into its config class (no unknown keys, right types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftt.config import ConfigError, load_config
from rftt.evaluate import EvalConfig
from rftt.search.runner import SearchRunConfig
from rftt.train.rl import RLConfig
from rftt.train.sft import SFTConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CONFIG_BY_PREFIX = {"eval_": EvalConfig, "search_": SearchRunConfig, "sft_": SFTConfig, "rftt_": RLConfig,
                    "reft_": RLConfig, "grpo_": RLConfig}


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.name)
def test_recipe_loads(recipe):
    [config_class] = [cls for prefix, cls in CONFIG_BY_PREFIX.items() if recipe.name.startswith(prefix)]
    config = load_config(config_class, recipe)
    assert config.output_dir.startswith("runs/")


@pytest.mark.parametrize("recipe", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda path: path.name)
def test_accelerate_configs_parse(recipe):
    import yaml

    settings = yaml.safe_load(recipe.read_text())
    assert settings["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP") and settings["num_processes"] >= 1


def test_floats_written_without_a_dot_are_floats(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1e-6\n")  # YAML 1.1 reads this as the string '1e-6'
    config = load_config(RLConfig, recipe, ["kl.coefficient=5E-2", "clip=.2"])
    assert (config.learning_rate, config.kl.coefficient, config.clip) == (1e-6, 0.05, 0.2)
    with pytest.raises(ConfigError, match="config.learning_rate: expected float, got 'fast'"):
        load_config(RLConfig, overrides=["learning_rate=fast"])
