"""Every shipped recipe loads into its config class (no unknown keys, right types)."""

from __future__ import annotations

import dataclasses
import json
import typing
import warnings
from pathlib import Path

import pytest

from rftt.config import ConfigError, load_config, to_dict, with_defaults
from rftt.demo import demo_config
from rftt.evaluate import EvalConfig
from rftt.search.runner import SearchRunConfig
from rftt.train.rl import RLConfig
from rftt.train.sft import SFTConfig

from conftest import settings_before_grouping

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CONFIG_BY_PREFIX = {"eval_": EvalConfig, "search_": SearchRunConfig, "sft_": SFTConfig, "rftt_": RLConfig,
                    "reft_": RLConfig, "grpo_": RLConfig}


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.name)
def test_recipe_loads(recipe):
    [config_class] = [cls for prefix, cls in CONFIG_BY_PREFIX.items() if recipe.name.startswith(prefix)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # shipped recipes use today's names
        config = load_config(config_class, recipe)
    assert config.output_dir.startswith("runs/")


@pytest.mark.parametrize("budget", ["default", "small"])
def test_demo_recipes_load_under_todays_names(budget):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config = demo_config(budget)
    assert config.evaluation.tree.step_max_tokens == (48 if budget == "default" else 32)


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


OLD_EVALUATION = """\
method: tree
answer_format: text
absolute_tolerance: 0.0
last_number_fallback: true
tree_temperature: 0.3
tree_max_children: 3
tree_sampled_children: 2
tree_step_max_tokens: 40
"""
NEW_EVALUATION = """\
method: tree
answer_check: {format: text, absolute_tolerance: 0.0, last_number_fallback: true}
tree: {temperature: 0.3, max_children: 3, sampled_children: 2, step_max_tokens: 40}
"""


def test_a_recipe_with_the_names_before_grouping_loads_as_today_and_says_the_new_names(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD_EVALUATION)
    new.write_text(NEW_EVALUATION)
    with pytest.warns(FutureWarning, match="old.yaml: tree_temperature is now tree.temperature"):
        from_old = load_config(EvalConfig, old)
    assert from_old == load_config(EvalConfig, new) and from_old.tree.temperature == 0.3
    with pytest.warns(FutureWarning, match="=12'?: rollout.step_max_tokens is now rollout.tree.step_max_tokens"):
        rl = load_config(RLConfig, overrides=["rollout.step_max_tokens=12", "rollout.last_number_fallback=true"])
    assert rl.rollout.tree.step_max_tokens == 12 and rl.rollout.answer_check.last_number_fallback is True
    with pytest.warns(FutureWarning, match="evaluation.answer_format is now evaluation.answer_check.format"):
        demo = demo_config("small", overrides=["evaluation.answer_format=text", "evaluation.tree_sampled_children=5"])
    assert demo.evaluation.tree.sampled_children == 5 and demo.evaluation.tree.step_max_tokens == 32


def test_an_old_name_set_later_wins_and_both_names_in_one_place_are_refused(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text(NEW_EVALUATION)
    with pytest.warns(FutureWarning):
        assert load_config(EvalConfig, new, ["tree_temperature=0.9"]).tree.temperature == 0.9
    both = tmp_path / "both.yaml"
    both.write_text("tree_temperature: 0.2\ntree: {temperature: 0.4}\n")
    with pytest.raises(ConfigError, match="old name of tree.temperature, and both are set; set tree.temperature only"):
        load_config(EvalConfig, both)


def test_settings_saved_under_old_names_read_as_todays():
    saved = {key: value for key, value in to_dict(EvalConfig()).items() if key not in ("tree", "answer_check")}
    saved |= {"tree_temperature": 0.5, "answer_format": "text"}
    settings = with_defaults(EvalConfig, saved)
    assert settings["tree"]["temperature"] == 0.5 and settings["answer_check"]["format"] == "text"
    assert "tree_temperature" not in settings
    # the old tree search sampled at top_p 0.95 without recording it; settings saved under today's names keep theirs
    assert settings["tree"]["top_p"] == 0.95 and with_defaults(EvalConfig, to_dict(EvalConfig()))["tree"]["top_p"] is None


def _config_classes(cls: type, seen: set) -> set:
    seen.add(cls)
    for hint in typing.get_type_hints(cls).values():
        for option in (typing.get_args(hint) or (hint,)):
            if dataclasses.is_dataclass(option) and option not in seen:
                _config_classes(option, seen)
    return seen


def test_every_renamed_key_names_a_setting_that_exists_today():
    from rftt.demo_settings import DemoConfig

    classes = _config_classes(DemoConfig, set()) | _config_classes(RLConfig, set()) | _config_classes(EvalConfig, set())
    renamed = [cls for cls in classes if getattr(cls, "renamed_keys", None)]
    assert renamed, "no config renames a key: the check below checks nothing"
    for cls in renamed:
        fields = {field.name for field in dataclasses.fields(cls)}
        for old, new in cls.renamed_keys.items():
            assert old not in fields, f"{cls.__name__}.{old} is both a setting and an old name"
            group, _, name = new.rpartition(".")
            owner = typing.get_type_hints(cls)[group] if group else cls
            assert name in {field.name for field in dataclasses.fields(owner)}, f"{cls.__name__}: {new}"
        for key in getattr(cls, "renamed_values", {}):
            assert key in fields, f"{cls.__name__}.renamed_values names {key}, not a setting"


@pytest.mark.parametrize("method, changed", [("greedy", []), ("maj@4", []), ("tree", ["tree"])])
def test_an_evaluation_folder_saved_before_the_grouping_continues_unless_its_tree_search_changed(tmp_path, method,
                                                                                                  changed):
    from rftt.evaluate import EVAL_RUN_FOLDER
    from rftt.run_folder import changed_settings

    now = to_dict(EvalConfig(method=method))
    old = settings_before_grouping(now, EvalConfig.renamed_keys, {"tree_temperature": 0.1, "dtype": "auto"})
    assert "answer_check" not in old and old["tree_temperature"] == 0.1
    (tmp_path / "config.json").write_text(json.dumps(old))
    # the old default sampled tree steps at 0.1, today's at the evaluation's temperature: only a tree search differs
    assert changed_settings(tmp_path, EvalConfig, now, EVAL_RUN_FOLDER) == changed


@pytest.mark.parametrize("kind, changed", [("sampling", []), ("tree", ["rollout"])])
def test_an_rl_folder_saved_before_the_grouping_continues_unless_its_tree_rollouts_changed(tmp_path, kind, changed):
    from rftt.run_folder import changed_settings
    from rftt.train.rl_config import RL_RUN_FOLDER
    from rftt.train.rollouts import RolloutConfig

    now = to_dict(RLConfig(precision="fp32", rollout=RolloutConfig(kind=kind)))
    old = now | {"rollout": settings_before_grouping(now["rollout"], RolloutConfig.renamed_keys, {"step_max_tokens": 128})}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert changed_settings(tmp_path, RLConfig, now, RL_RUN_FOLDER) == changed
