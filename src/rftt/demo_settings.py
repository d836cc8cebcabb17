"""The demo's settings and where a demo run keeps its files: shared by the demo and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rftt.data import DatasetSpec
from rftt.demo_budget import BudgetConfig
from rftt.evaluate import EvalConfig
from rftt.models import DEFAULT_MODEL
from rftt.precision import AUTO_DEVICE
from rftt.run_folder import RunFolder, changed_settings
from rftt.search.runner import SearchRunConfig
from rftt.train.rl import RLConfig
from rftt.train.rl_config import rl_settings_in_use
from rftt.train.sft import SFTConfig

BUDGETS = ("default", "small")
# The task the demo was built and measured on (README.md, "The demo").
DEMO_TASK = "arithmetic"
ABLATION_SUFFIX = "-no-functional-tokens"
"""The run folder of `--no-functional-tokens` is the main run's folder with this suffix (so reports pair them)."""
STAGES_FILE = "stages.json"
CONFIG_FILE = "demo_config.json"
PROBLEM_FOLDER = "problems"
DEMO_PATHS = ("model", "task.path", "held_out.path", "output_dir")
"""Settings that name local files; a run folder compares them resolved, so a rerun from elsewhere continues."""
PROBLEM_SETTINGS = ("task", "held_out", "held_out_problems", "dev_problems", "budget")
"""The settings the `problems` stage reads (every later stage has its own recipe to compare)."""
PLAN_SETTINGS = ("budget", "model", "device", "held_out_problems", "search_problems", "tree_problems")
"""The settings the `calibration` stage's plan depends on (beside sft.epochs and rl.steps, which cap it)."""


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings. The stage sections are ordinary stage configs; the demo fills in their model,
    data, seed and output folder, so only the other settings of those sections take effect.
    `functional_tokens: false` is the ablation: the same pipeline with the step tags kept as ordinary text.
    `device` (`auto`: the GPU when there is one, `cpu`, `cuda`) is every stage's, the calibration's too.
    `keep_resume_checkpoints: false` deletes a finished SFT or RL stage's resume checkpoints (weights and optimizer
    state, three times its final model) once the stage is done; true keeps them, to train that stage on later."""

    model: str = DEFAULT_MODEL
    task: DatasetSpec = field(default_factory=lambda: DatasetSpec(name=DEMO_TASK, size=2000, seed=1))
    held_out: DatasetSpec = field(default_factory=lambda: DatasetSpec(name=DEMO_TASK, size=450, seed=100_000))
    held_out_problems: int = 200
    baseline_problems: int | None = None   # the start model is scored on the first N held-out problems (None: all)
    dev_problems: int = 50
    search_problems: int = 384
    tree_problems: int = 50
    seed: int = 0
    functional_tokens: bool = True
    device: str = AUTO_DEVICE
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    search: SearchRunConfig = field(default_factory=SearchRunConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    example_trees: int = 3
    example_rollouts: int = 8
    keep_resume_checkpoints: bool = False
    output_dir: str = "runs/demo"


def paired_run(run: Path, functional_tokens: bool) -> Path:
    """The folder of the same demo with the other choice of `functional_tokens` (the ablation's pair)."""
    if functional_tokens:
        return run.with_name(run.name + ABLATION_SUFFIX)
    return run.with_name(run.name.removesuffix(ABLATION_SUFFIX))


def problem_file(run: Path, name: str, limit: int | None = None) -> DatasetSpec:
    return DatasetSpec(name="json", path=str(run / PROBLEM_FOLDER / f"{name}.jsonl"), limit=limit)


DEMO_RUN_FOLDER = RunFolder(CONFIG_FILE, DEMO_PATHS, frozenset({"keep_resume_checkpoints"}),
                            comparable=lambda settings: {**settings, "rl": rl_settings_in_use(settings["rl"])})
"""The demo's settings, its RL stage's compared by what it reads (its evaluation's tree settings always are: the
demo searches with the trained model)."""


def settings_changed(run: Path, settings: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """The top-level settings of the demo saved in `run` that differ from `settings` (none if nothing is saved)."""
    return changed_settings(run, DemoConfig, settings, DEMO_RUN_FOLDER, ignore)
