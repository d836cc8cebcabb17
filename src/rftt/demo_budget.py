"""Sizing `rftt demo`'s stages to a wall-time budget on the machine it runs on.

Before the first stage the demo times two probes here: greedy generation with the start model and one
training step (forward and backward), each in the precision its stages will use. The seconds a stage takes per
item (a problem evaluated or searched, a warm-up example trained for an epoch, an RL step) were measured on a
reference machine together with the same probes (`StageCosts`, recipe data); scaled by the probes' ratios they
give this machine's costs. Each sized stage then takes as many items as its share of the budget pays for, never
more than the recipe asks; RL gets what is left, recomputed when it starts from the time really spent.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

import torch

from rftt.config import ConfigError, configured_device, configured_training_precision
from rftt.precision import Precision, autocast

if TYPE_CHECKING:
    from rftt.demo_settings import DemoConfig


@dataclass(frozen=True)
class ProbeSettings:
    """The two speed probes: `prompts` greedy continuations of `new_tokens` tokens, and a training step on
    `train_batch` random sequences of `train_length` tokens; each timed `repeats` times, the fastest kept."""

    prompts: int = 16
    new_tokens: int = 24
    train_batch: int = 8
    train_length: int = 96
    repeats: int = 2


@dataclass(frozen=True)
class StageCosts:
    """Seconds on the reference machine: the probes, and each stage per item with the demo's recipe."""

    generation_probe: float = 1.0
    training_probe: float = 1.0
    stage_start: float = 3.0            # loading a model at the start of a stage
    baseline_per_problem: float = 0.3   # the start model, chat template, greedy
    search_per_problem: float = 1.0     # phase-1 tree search
    sft_examples_per_problem: float = 0.3
    sft_per_example: float = 1.0        # one warm-up example for one epoch
    evaluation_per_problem: float = 0.1  # a trained model, greedy
    tree_per_problem: float = 1.0       # a trained model, every size in evaluation.tree_rollouts
    rl_step: float = 20.0
    report: float = 10.0


@dataclass(frozen=True)
class StageShares:
    """The fraction of the budget each sized stage may use (the three greedy evaluations share one)."""

    search: float = 0.2
    sft: float = 0.1
    evaluation: float = 0.2
    tree: float = 0.1


@dataclass(frozen=True)
class BudgetConfig:
    """`minutes: null` runs the recipe's sizes as they are (and RL for `rl.steps`). `reserve` is the fraction of
    the minutes left out of the plan, for stages that run over theirs (timings vary by a few percent)."""

    minutes: float | None = 25.0
    reserve: float = 0.03
    shares: StageShares = field(default_factory=StageShares)
    minimum_held_out: int = 100
    minimum_search: int = 32
    minimum_rl_steps: int = 3
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    reference: StageCosts = field(default_factory=StageCosts)


@dataclass(frozen=True)
class MachineSpeed:
    """How much slower this machine is than the reference one (above 1: slower), from the probes."""

    generation: float
    training: float


@dataclass(frozen=True)
class RecipeSizes:
    """The sizes a recipe asks for: the plan never goes above them."""

    held_out_problems: int
    baseline_problems: int | None
    search_problems: int
    sft_epochs: float
    tree_problems: int
    rl_steps: int


@dataclass(frozen=True)
class DemoPlan:
    """The sizes chosen and the seconds planned per stage (`rl` is what is left)."""

    held_out_problems: int
    search_problems: int
    sft_epochs: float
    tree_problems: int
    rl_steps: int
    seconds: dict[str, float]
    speed: MachineSpeed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DemoPlan:
        return cls(**{**values, "speed": MachineSpeed(**values["speed"])})


AFTER_RL = ("eval-rl", "eval-rl-tree", "report")
"""The planned stages that follow RL: RL's minutes are the budget left minus theirs."""


def _fitting(count_asked: int, seconds_each: float, seconds: float) -> int:
    """How many items of `seconds_each` fit in `seconds`, at most `count_asked`."""
    return min(count_asked, math.floor(seconds / seconds_each)) if seconds_each > 0 else count_asked


def _held_out_fitting(sizes: RecipeSizes, baseline_each: float, trained_each: float, seconds: float) -> int:
    """How many held-out problems the greedy evaluations can score in `seconds`: the start model scores at most
    `sizes.baseline_problems` of them, each trained model all of them."""
    baseline_cap = sizes.held_out_problems if sizes.baseline_problems is None else sizes.baseline_problems
    if (baseline_each + 2 * trained_each) * baseline_cap <= seconds:
        return _fitting(sizes.held_out_problems, 2 * trained_each, seconds - baseline_each * baseline_cap)
    return _fitting(sizes.held_out_problems, baseline_each + 2 * trained_each, seconds)


def plan_budget(budget: BudgetConfig, sizes: RecipeSizes, speed: MachineSpeed, spent: float = 0.0) -> DemoPlan:
    """Stage sizes that fit `budget.minutes` on a machine of `speed`, `spent` seconds already gone (the probes)."""
    costs, shares = budget.reference, budget.shares
    total, start = planned_seconds(budget) - spent, costs.stage_start

    def generating(per_item: float) -> float:
        return per_item * speed.generation

    held_out = _held_out_fitting(sizes, generating(costs.baseline_per_problem), generating(costs.evaluation_per_problem),
                                 shares.evaluation * total - 3 * start)
    baseline = held_out if sizes.baseline_problems is None else min(held_out, sizes.baseline_problems)
    search = _fitting(sizes.search_problems, generating(costs.search_per_problem), shares.search * total - start)
    example_epoch = costs.sft_per_example * speed.training * max(1.0, search * costs.sft_examples_per_problem)
    epochs = min(sizes.sft_epochs, max(1, math.floor((shares.sft * total - start) / example_epoch)))
    tree = _fitting(sizes.tree_problems, generating(costs.tree_per_problem), shares.tree * total - start)
    seconds = {
        "baseline": start + baseline * generating(costs.baseline_per_problem),
        "search": start + search * generating(costs.search_per_problem),
        "sft": start + epochs * example_epoch,
        "eval-sft": start + held_out * generating(costs.evaluation_per_problem),
        "eval-rl": start + held_out * generating(costs.evaluation_per_problem),
        "eval-rl-tree": start + tree * generating(costs.tree_per_problem),
        "report": costs.report,
    }
    seconds["rl"] = total - sum(seconds.values())
    rl_step = costs.rl_step * max(speed.generation, speed.training)
    rl_steps = min(sizes.rl_steps, math.floor((seconds["rl"] - start) / rl_step))
    plan = DemoPlan(held_out_problems=held_out, search_problems=search, sft_epochs=epochs, tree_problems=tree,
                    rl_steps=rl_steps, seconds={name: round(value, 1) for name, value in seconds.items()}, speed=speed)
    _check_large_enough(budget, sizes, plan, spent)
    return plan


def _check_large_enough(budget: BudgetConfig, sizes: RecipeSizes, plan: DemoPlan, spent: float) -> None:
    """A budget too small to evaluate, search or train meaningfully here is refused before anything runs (a recipe
    that asks for less than a minimum gets what it asks)."""
    checks = (("held-out problems", plan.held_out_problems, sizes.held_out_problems, budget.minimum_held_out),
              ("searched problems", plan.search_problems, sizes.search_problems, budget.minimum_search),
              ("RL steps", plan.rl_steps, sizes.rl_steps, budget.minimum_rl_steps))
    short = [f"{got} {what} (at least {min(asked, minimum)})" for what, got, asked, minimum in checks
             if got < min(asked, minimum)]
    if short:
        raise ConfigError(f"budget.minutes: {budget.minutes} minutes on this machine ({spent:.0f} s of it to measure "
                          f"its speed) pay for only {', '.join(short)}; give more minutes (--minutes)")


def rl_minutes(budget: BudgetConfig, plan: DemoPlan, spent: float, taken: Mapping[str, float] | None = None) -> float:
    """RL's wall-time bound when it starts: the budget minus the seconds spent and those planned after RL. The
    evaluations after RL are planned at the pace `eval-sft` really took (`taken`: seconds per finished stage) when
    that was slower than planned, since they generate from the same kind of model (never faster: a quick stage
    does not lend RL the margin)."""
    slowdown = 1.0
    if taken and "eval-sft" in taken and plan.seconds.get("eval-sft"):
        slowdown = max(1.0, taken["eval-sft"] / plan.seconds["eval-sft"])
    after = sum(plan.seconds[name] * (slowdown if name != "report" else 1.0) for name in AFTER_RL)
    return max(planned_seconds(budget) - spent - after, 0.0) / 60


def planned_seconds(budget: BudgetConfig) -> float:
    """The seconds the stages are planned to fill: the budget less its reserve."""
    if budget.minutes is None:
        raise ConfigError("budget.minutes: no budget to plan for")
    if not 0 <= budget.reserve < 1:
        raise ConfigError(f"budget.reserve: {budget.reserve} is not a fraction in [0, 1)")
    return budget.minutes * 60 * (1 - budget.reserve)


def measure_speed(model_name: str, generation_precision: Precision, training_precision: str, budget: BudgetConfig,
                  device: torch.device) -> tuple[MachineSpeed, dict[str, float]]:
    """This machine's speed against the reference one, and the probes' seconds, with the start model on the
    stages' device, in the precision generation stages load and the one training stages compute in (resolved)."""
    from rftt.models import load_model

    model, tokenizer = load_model(model_name, dtype=generation_precision, device=device)
    generation = probe_generation(model, tokenizer, budget.probe)
    training = probe_training(model.float().train(), budget.probe, autocast(training_precision, device))
    seconds = {"generation_probe": round(generation, 3), "training_probe": round(training, 3)}
    speed = MachineSpeed(generation=generation / budget.reference.generation_probe,
                         training=training / budget.reference.training_probe)
    return speed, seconds


def probe_generation(model: Any, tokenizer: Any, probe: ProbeSettings) -> float:
    """Fastest seconds of `probe.prompts` greedy continuations of exactly `probe.new_tokens` tokens."""
    batch = tokenizer(["Calculate 12 + 34."] * probe.prompts, return_tensors="pt").to(model.device)

    def generate() -> None:
        model.generate(**batch, max_new_tokens=probe.new_tokens, min_new_tokens=probe.new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)

    return _fastest(generate, probe.repeats)


def probe_training(model: Any, probe: ProbeSettings, autocast: Any) -> float:
    """Fastest seconds of a forward and backward pass on random tokens (the gradients are thrown away)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (probe.train_batch, probe.train_length), generator=generator)
    ids = ids.to(model.device)

    def step() -> None:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return _fastest(step, probe.repeats)


def _fastest(work: Any, repeats: int) -> float:
    """The fastest of `repeats` timed runs of `work`, after one untimed run that warms caches up."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a GPU's work is launched, not done, when `work` returns
        times.append(time.perf_counter() - started)
    return min(times)


def recipe_sizes(config: DemoConfig) -> RecipeSizes:
    """The sizes a demo recipe asks for."""
    return RecipeSizes(held_out_problems=config.held_out_problems, baseline_problems=config.baseline_problems,
                       search_problems=config.search_problems,
                       sft_epochs=config.sft.epochs, tree_problems=config.tree_problems, rl_steps=config.rl.steps)


def planned_config(config: DemoConfig, plan: DemoPlan | None) -> DemoConfig:
    """The demo config with the plan's sizes (each at most what the recipe asks); unchanged without a plan."""
    if plan is None:
        return config
    return replace(config, held_out_problems=min(plan.held_out_problems, config.held_out_problems),
                   search_problems=min(plan.search_problems, config.search_problems),
                   tree_problems=min(plan.tree_problems, config.tree_problems),
                   sft=replace(config.sft, epochs=min(plan.sft_epochs, config.sft.epochs)))


def calibrate(config: DemoConfig) -> dict[str, Any]:
    """The `calibration` stage: measure this machine, plan the stages, print the plan; returns both."""
    started = time.perf_counter()
    device = configured_device("config.device", config.device)
    training_precision = configured_training_precision("config.sft.precision", config.sft.precision, config.model)
    speed, probes = measure_speed(config.model, config.search.precision, training_precision, config.budget, device)
    plan = plan_budget(config.budget, recipe_sizes(config), speed, spent=time.perf_counter() - started)
    print(format_plan(plan, probes), flush=True)
    return {"probes": probes, "plan": plan.to_dict()}


def format_plan(plan: DemoPlan, probes: Mapping[str, float]) -> str:
    """The plan as the demo prints it before the first stage."""
    lines = [f"this machine: generation {plan.speed.generation:.2f}x and training {plan.speed.training:.2f}x the "
             f"reference machine's seconds (probes {probes['generation_probe']} s, {probes['training_probe']} s)",
             f"plan: {plan.held_out_problems} held-out problems, {plan.search_problems} searched, "
             f"{plan.sft_epochs:g} SFT epochs, about {plan.rl_steps} RL steps, tree search on {plan.tree_problems}"]
    lines += [f"  {name:<14}{seconds:>8.1f} s planned" for name, seconds in plan.seconds.items()]
    return "\n".join(lines)
