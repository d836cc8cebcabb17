"""The demo's budget planner: stage sizes that fit the minutes on a machine of measured speed, RL's bound from the
time really spent, refusals of budgets too small, and the speed probes on a real (tiny) model."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import pytest

from rftt.config import ConfigError
from rftt.demo_budget import (
    AFTER_RL,
    BudgetConfig,
    DemoPlan,
    MachineSpeed,
    ProbeSettings,
    RecipeSizes,
    StageCosts,
    plan_budget,
    planned_config,
    probe_generation,
    probe_training,
    recipe_sizes,
    rl_minutes,
)

from conftest import build_tiny_model, build_tiny_tokenizer

COSTS = StageCosts(generation_probe=1.0, training_probe=1.0, stage_start=5.0, baseline_per_problem=0.3,
                   search_per_problem=0.5, sft_examples_per_problem=0.5, sft_per_example=0.2,
                   evaluation_per_problem=0.2, tree_per_problem=1.0, rl_step=20.0, report=10.0)
SIZES = RecipeSizes(held_out_problems=600, baseline_problems=200, search_problems=384, sft_epochs=3, tree_problems=200, rl_steps=1000)


def budget(minutes: float) -> BudgetConfig:
    return BudgetConfig(minutes=minutes, reference=COSTS)


def test_a_fast_machine_gets_the_recipes_sizes_and_rl_the_rest_of_the_budget():
    plan = plan_budget(budget(25), SIZES, MachineSpeed(generation=0.5, training=0.5), spent=20.0)
    assert (plan.held_out_problems, plan.search_problems, plan.sft_epochs, plan.tree_problems) == (600, 384, 3, 200)
    assert sum(plan.seconds.values()) == pytest.approx(25 * 60 * 0.97 - 20.0, abs=0.5)  # the default 3% reserve
    assert plan.seconds["search"] == pytest.approx(5.0 + 384 * 0.5 * 0.5)
    assert plan.rl_steps == (plan.seconds["rl"] - 5.0) // 10.0


def test_a_slow_machine_gets_fewer_problems_within_each_stages_share():
    slow = plan_budget(budget(25), SIZES, MachineSpeed(generation=3.0, training=3.0))
    assert slow.held_out_problems < 600 and slow.search_problems < 384 and slow.tree_problems < 200
    shares = budget(25).shares
    assert slow.seconds["search"] <= shares.search * 25 * 60
    greedy = slow.seconds["baseline"] + slow.seconds["eval-sft"] + slow.seconds["eval-rl"]
    assert greedy <= shares.evaluation * 25 * 60 + 1e-6
    baseline = min(slow.held_out_problems, 200)  # the start model scores at most the first 200
    assert slow.seconds["baseline"] == pytest.approx(5.0 + baseline * 0.3 * 3.0)
    assert slow.rl_steps >= 3 and sum(slow.seconds.values()) == pytest.approx(25 * 60 * 0.97, abs=0.5)


def test_the_start_model_scores_only_the_first_baseline_problems_so_more_are_left_for_the_trained_ones():
    capped = plan_budget(budget(25), SIZES, MachineSpeed(generation=1.5, training=1.0))
    uncapped = plan_budget(budget(25), replace(SIZES, baseline_problems=None), MachineSpeed(generation=1.5, training=1.0))
    assert capped.held_out_problems > uncapped.held_out_problems
    assert capped.seconds["baseline"] == pytest.approx(5.0 + 200 * 0.3 * 1.5)


def test_a_budget_too_small_for_this_machine_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"budget.minutes: 2 minutes .* held-out problems \(at least 100\)"):
        plan_budget(budget(2), SIZES, MachineSpeed(generation=3.0, training=3.0))


def test_a_reserve_outside_zero_to_one_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"budget.reserve: 1.5"):
        plan_budget(replace(budget(25), reserve=1.5), SIZES, MachineSpeed(generation=1.0, training=1.0))


def test_a_recipe_asking_for_less_than_a_minimum_is_not_refused():
    tiny = RecipeSizes(held_out_problems=6, baseline_problems=None, search_problems=3, sft_epochs=2, tree_problems=3, rl_steps=2)
    plan = plan_budget(budget(25), tiny, MachineSpeed(generation=0.01, training=0.01))
    assert (plan.held_out_problems, plan.search_problems, plan.rl_steps) == (6, 3, 2)


def test_rl_gets_the_budget_left_after_the_time_spent_and_the_stages_after_it():
    plan = plan_budget(budget(25), SIZES, MachineSpeed(generation=1.0, training=1.0))
    after = sum(plan.seconds[name] for name in AFTER_RL)
    assert rl_minutes(budget(25), plan, spent=600.0) == pytest.approx((1500 * 0.97 - 600 - after) / 60)
    assert rl_minutes(budget(25), plan, spent=1500.0) == 0.0


def test_evaluations_slower_than_planned_before_rl_leave_rl_less_time_and_faster_ones_no_more():
    plan = plan_budget(budget(25), SIZES, MachineSpeed(generation=1.0, training=1.0))
    on_plan = rl_minutes(budget(25), plan, spent=600.0)
    evaluations = plan.seconds["eval-rl"] + plan.seconds["eval-rl-tree"]
    slow = rl_minutes(budget(25), plan, spent=600.0, taken={"eval-sft": 1.5 * plan.seconds["eval-sft"]})
    assert slow == pytest.approx(on_plan - 0.5 * evaluations / 60)
    assert rl_minutes(budget(25), plan, spent=600.0, taken={"eval-sft": 0.5 * plan.seconds["eval-sft"]}) == on_plan
    assert DemoPlan.from_dict(plan.to_dict()) == plan


def test_the_probes_time_a_real_model_generating_and_training():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=0)
    probe = ProbeSettings(prompts=2, new_tokens=3, train_batch=2, train_length=8, repeats=1)
    assert probe_generation(model, tokenizer, probe) > 0
    assert probe_training(model, probe, nullcontext()) > 0
    assert all(parameter.grad is None for parameter in model.parameters())


def test_a_plan_never_asks_for_more_than_the_recipe_and_no_plan_changes_nothing():
    from rftt.demo_settings import DemoConfig

    config = DemoConfig(held_out_problems=300, search_problems=100, tree_problems=50)
    plan = plan_budget(budget(25), recipe_sizes(config), MachineSpeed(generation=0.1, training=0.1))
    planned = planned_config(config, replace(plan, held_out_problems=10_000, search_problems=40))
    assert (planned.held_out_problems, planned.search_problems, planned.tree_problems) == (300, 40, 50)
    assert planned_config(config, None) == config
