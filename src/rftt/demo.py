"""`rftt demo`: the whole RFTT pipeline on the embedded model, with a report.

Stages, each in its own folder of the run and each resumable on its own:

0. `calibration`: this machine's generation and training speed, and the stage sizes that fit `budget.minutes`
   (`rftt.demo_budget`);
1. `problems`: training problems, a dev split carved from them, and held-out problems
   (held-out questions that also occur in training are dropped), written as JSONL so that
   every later stage can be re-run alone with the command the report gives;
2. `baseline`: greedy accuracy of the start model (its chat template, answer in `\\boxed{}`);
3. `search`: phase-1 tree search with the prompted policy on training problems; its
   correct and reflection paths are the warm-up data;
4. `sft`: warm-up on those paths (the functional tokens are added first);
5. `eval-sft`: greedy accuracy of the warmed-up model;
6. `rl`: phase-2 RL with tree rollouts (token-guided search, REINFORCE++);
7. `eval-rl` (greedy) and `eval-rl-tree` (inference-time search, 1, 4 and 16 rollouts);
8. `report`: `report.html`, `summary.json` and the plots (see `rftt.report`).

`stages.json` records which stages are done and the wall time each took (summed over
reruns), so Ctrl-C and the same command again continue where the run stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from rftt.config import ConfigError, load_config, merge_settings, to_dict, with_defaults
from rftt.data.benchmarks import BENCHMARKS
from rftt.demo_budget import DemoPlan, calibrate, planned_config, rl_minutes
from rftt.demo_problems import make_problem_files
from rftt.demo_settings import (
    BUDGETS,
    CONFIG_FILE,
    DEMO_RUN_FOLDER,
    PLAN_SETTINGS,
    PROBLEM_FOLDER,
    PROBLEM_SETTINGS,
    STAGES_FILE,
    DemoConfig,
    problem_file,
    settings_changed,
)
from rftt.evaluate import EvalConfig, evaluate, evaluation_settings_in_use
from rftt.run_folder import claim_run_folder
from rftt.search.runner import SearchRunConfig, run_search
from rftt.train import CHECKPOINT_FOLDER, FINAL_FOLDER
from rftt.train.rl import RLConfig, run_rl
from rftt.train.rl_config import rl_settings_in_use
from rftt.train.sft import SFTConfig, run_sft


def budget_recipe(budget: str) -> dict[str, Any]:
    """The packaged settings of a budget: `default`, and `small` layered on top of it."""
    if budget not in BUDGETS:
        raise ConfigError(f"--budget: {budget!r} is not one of {list(BUDGETS)}")
    data: dict[str, Any] = {}
    for name in BUDGETS[: BUDGETS.index(budget) + 1]:
        text = resources.files("rftt").joinpath(f"recipes/demo_{name}.yaml").read_text()
        data = merge_settings(data, yaml.safe_load(text) or {})
    return data


def demo_config(budget: str = "default", recipe: str | None = None, overrides: Sequence[str] = (),
                flags: dict[str, Any] | None = None) -> DemoConfig:
    """Budget defaults, then a user recipe, then command-line flags, then `key=value` overrides."""
    return load_config(DemoConfig, recipe, overrides, base=budget_recipe(budget), flags=flags)


def task_flags(task: str) -> dict[str, Any]:
    """`--task NAME`: the training and held-out problems both come from NAME; a benchmark uses its `train`
    and `test` splits (set `task.split`/`held_out.split` for others), a generated task the budget's seeds."""
    if task in BENCHMARKS:
        return {"task": {"name": task, "split": "train", "size": None, "seed": None},
                "held_out": {"name": task, "split": "test", "size": None, "seed": None}}
    return {"task": {"name": task}, "held_out": {"name": task}}


class StageBook:
    """`stages.json`: per stage whether it is done, its wall seconds (over all reruns), its command, its summary."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def done(self, name: str) -> bool:
        return bool(self.stages.get(name, {}).get("done"))

    def spent(self) -> float:
        """Wall seconds of every stage so far (copied stages count as measured where they ran)."""
        return sum(record["seconds"] for record in self.stages.values())

    def run(self, name: str, command: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stage's summary: saved if it is done, else from running `work` (its time is kept even if killed)."""
        record = self.stages.setdefault(name, {"done": False, "seconds": 0.0})
        record["command"] = command
        if record["done"]:
            return record["summary"]
        print(f"\n== {name} ==\n{command}", flush=True)
        started = time.perf_counter()
        try:
            summary = work()
        finally:
            record["seconds"] += time.perf_counter() - started
            self._save()
        record.update(done=True, summary=summary)
        self._save()
        print(f"[{name}] {record['seconds']:.1f} s", flush=True)
        return summary

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.stages, indent=2, default=str) + "\n")
        temporary.replace(self.path)


def stage_recipe(config: Any) -> str:
    """A stage's full config as the text of a YAML recipe."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def write_recipe(config: Any, folder: Path) -> Path:
    """A stage's recipe beside its files, so the stage can be re-run alone."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(stage_recipe(config))
    return path


@dataclass(frozen=True)
class StagePlan:
    """The config of every stage, derived from the demo config."""

    baseline: EvalConfig
    search: SearchRunConfig
    sft: SFTConfig
    eval_sft: EvalConfig
    rl: RLConfig
    eval_rl: EvalConfig
    eval_rl_tree: EvalConfig


def plan_stages(config: DemoConfig) -> StagePlan:
    run = Path(config.output_dir)
    held_out = problem_file(run, "held_out")
    sft_model, rl_model = str(run / "sft" / FINAL_FOLDER), str(run / "rl" / FINAL_FOLDER)
    evaluation = replace(config.evaluation, seed=config.seed, method="greedy", dataset=held_out, device=config.device)
    trained = replace(evaluation, template=config.rl.rollout.template)
    search = replace(config.search, model=config.model, output_dir=str(run / "search"), device=config.device,
                     dataset=problem_file(run, "train", config.search_problems),
                     search=replace(config.search.search, seed=config.seed))
    sft = replace(config.sft, model=config.model, seed=config.seed, output_dir=str(run / "sft"), resume=True,
                  functional_tokens=config.functional_tokens, device=config.device,
                  data=replace(config.sft.data, source="search", style="functional",
                               path=str(run / "search" / "sft.jsonl")))
    rl = replace(config.rl, model=sft_model, seed=config.seed, output_dir=str(run / "rl"), resume=True, device=config.device,
                 dataset=problem_file(run, "train"), dev=problem_file(run, "dev") if config.rl.eval_every else None)
    return StagePlan(
        baseline=replace(evaluation, model=config.model, output_dir=str(run / "baseline"),
                         dataset=problem_file(run, "held_out", config.baseline_problems)),
        search=search, sft=sft,
        eval_sft=replace(trained, model=sft_model, output_dir=str(run / "eval-sft")),
        rl=rl,
        eval_rl=replace(trained, model=rl_model, output_dir=str(run / "eval-rl")),
        eval_rl_tree=replace(trained, model=rl_model, method="tree", output_dir=str(run / "eval-rl-tree"),
                             dataset=problem_file(run, "held_out", config.tree_problems)),
    )


def pipeline(plan: StagePlan) -> list[tuple[str, Any, str]]:
    """The stages after `problems` in order: name, config, and the `rftt` command that runs that config."""
    return [("baseline", plan.baseline, "eval"), ("search", plan.search, "search"), ("sft", plan.sft, "sft"),
            ("eval-sft", plan.eval_sft, "eval"), ("rl", plan.rl, "rl"), ("eval-rl", plan.eval_rl, "eval"),
            ("eval-rl-tree", plan.eval_rl_tree, "eval")]


def _moved(value: Any, old: str, new: str) -> Any:
    """`value` with every path inside the run folder `old` moved into `new`."""
    if isinstance(value, dict):
        return {key: _moved(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, old, new) for item in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    return value


SETTINGS_IN_USE: dict[type, Callable[[dict[str, Any]], dict[str, Any]]] = {
    EvalConfig: evaluation_settings_in_use, RLConfig: rl_settings_in_use}


def _same_stage_settings(source: Path, name: str, stage: Any, source_folder: str, run_folder: str) -> bool:
    """Whether the stage `name` of the run `source` ran with `stage`'s settings (those it reads, under today's
    names), paths aside."""
    recipe = source / name / "recipe.yaml"
    if not recipe.exists():
        return False
    in_use = SETTINGS_IN_USE.get(type(stage), lambda settings: settings)
    before = with_defaults(type(stage), _moved(yaml.safe_load(recipe.read_text()), source_folder, run_folder))
    return in_use(before) == in_use(yaml.safe_load(stage_recipe(stage)))


def reuse_finished_stages(source: Path, config: DemoConfig, stages: Sequence[tuple[str, Any, str]]) -> list[str]:
    """Copy into the new run the stages `source` finished with the same settings, in order, up to the first that
    differs (each stage reads the ones before it); returns their names. A variant (another RL on the same
    warm-up, say) then runs only what changed; the copies keep their measured seconds and say where they are from."""
    run = Path(config.output_dir)
    if not (source / STAGES_FILE).exists() or not (source / "demo.yaml").exists():
        raise ConfigError(f"--from-run: {source} holds no demo run (no {STAGES_FILE} or demo.yaml)")
    if source.resolve() == run.resolve():
        raise ConfigError(f"--from-run: {source} is the run folder itself; give another --output-dir")
    finished = json.loads((source / STAGES_FILE).read_text())
    source_folder = os.path.normpath(yaml.safe_load((source / "demo.yaml").read_text())["output_dir"])
    run_folder = os.path.normpath(config.output_dir)
    changed = set(settings_changed(source, to_dict(config)))
    same = {"problems": not changed & set(PROBLEM_SETTINGS)}
    same |= {name: _same_stage_settings(source, name, stage, source_folder, run_folder)
             for name, stage, _ in stages}
    reused: dict[str, dict[str, Any]] = {}
    for name, matches in same.items():
        if not matches or not finished.get(name, {}).get("done"):
            break
        resume_state = None if config.keep_resume_checkpoints else shutil.ignore_patterns(CHECKPOINT_FOLDER)
        shutil.copytree(source / name, run / name, dirs_exist_ok=True, ignore=resume_state)
        reused[name] = {**finished[name], "reused_from": str(source)}
    _add_stages(run, reused)
    return list(reused)


def reuse_plan(source: Path, config: DemoConfig) -> bool:
    """Take the `calibration` stage (the plan) of the run `source` when the settings it depends on are the same, so
    that a variant of a run is sized as that run was; returns whether it did."""
    if not (source / STAGES_FILE).exists() or not (source / CONFIG_FILE).exists():
        raise ConfigError(f"--from-run: {source} holds no demo run (no {STAGES_FILE} or {CONFIG_FILE})")
    calibration = json.loads((source / STAGES_FILE).read_text()).get("calibration", {})
    if not calibration.get("done") or set(settings_changed(source, to_dict(config))) & set(PLAN_SETTINGS):
        return False
    _add_stages(Path(config.output_dir), {"calibration": {**calibration, "reused_from": str(source)}})
    return True


def _add_stages(run: Path, records: dict[str, dict[str, Any]]) -> None:
    path = run / STAGES_FILE
    stages = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**stages, **records}, indent=2, default=str) + "\n")


def run_demo(config: DemoConfig, from_run: str | None = None) -> dict[str, Any]:
    """Run (or continue) every stage, then write the report; returns the report's summary. A new run with
    `from_run` first takes that run's finished stages whose settings match (`reuse_finished_stages`)."""
    from rftt.report import write_report

    run = Path(config.output_dir)
    claim_run_folder(run, DemoConfig, to_dict(replace(config, output_dir=str(run))), DEMO_RUN_FOLDER)
    (run / "demo.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    fresh = from_run is not None and not (run / STAGES_FILE).exists()
    if fresh:
        reuse_plan(Path(from_run), config)
    book = StageBook(run / STAGES_FILE)
    plan = _plan(config, book, f"rftt demo --config {run / 'demo.yaml'}")
    planned = planned_config(config, plan)
    stages = pipeline(plan_stages(planned))
    if fresh:
        reused = reuse_finished_stages(Path(from_run), planned, stages)
        print(f"from {from_run}: {', '.join(reused) or 'no stage'} (same settings, finished)", flush=True)
        book = StageBook(run / STAGES_FILE)
    book.run("problems", f"rftt demo --config {run / 'demo.yaml'}",
             lambda: make_problem_files(planned, run / PROBLEM_FOLDER))
    for name, stage, command in stages:
        if name == "rl" and plan is not None and not book.done(name):
            taken = {stage_name: record["seconds"] for stage_name, record in book.stages.items()}
            stage = replace(stage, max_minutes=round(rl_minutes(config.budget, plan, book.spent(), taken), 2))
        recipe = run / name / "recipe.yaml" if book.done(name) else write_recipe(stage, run / name)
        book.run(name, f"rftt {command} --config {recipe}", _stage_work(stage))
        if isinstance(stage, (SFTConfig, RLConfig)) and not config.keep_resume_checkpoints:
            shutil.rmtree(run / name / CHECKPOINT_FOLDER, ignore_errors=True)  # done: `final` is what later stages read
    return write_report(run, planned, book.stages, plan)


def _plan(config: DemoConfig, book: StageBook, command: str) -> DemoPlan | None:
    """The stage sizes for `budget.minutes` on this machine (measured once per run folder); None without a budget."""
    if config.budget.minutes is None:
        return None
    return DemoPlan.from_dict(book.run("calibration", command, lambda: calibrate(config))["plan"])


def _stage_work(stage: Any) -> Callable[[], dict[str, Any]]:
    """What running one stage means, by the type of its config."""
    if isinstance(stage, EvalConfig):
        return lambda: evaluate(stage)
    if isinstance(stage, SearchRunConfig):
        return lambda: run_search(stage)
    if isinstance(stage, SFTConfig):
        return lambda: run_sft(stage)

    def reinforce() -> dict[str, Any]:
        history = run_rl(stage)
        return {"steps_run": len(history), "steps": stage.steps}

    return reinforce

