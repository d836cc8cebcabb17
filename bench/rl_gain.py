"""RL's gain over the warm-up, measured on more held-out problems than the demo's 200.

The demo's report pairs the warmed-up and the RL model on 200 held-out problems, where
the standard error of a paired difference is about 2 points. This benchmark takes finished
demo runs and evaluates each one's `sft/final` and `rl/final` again, with the run's own
evaluation recipe (greedy, same template and length), on a fresh held-out set drawn with
another seed and, like the demo's, with every training question dropped. It reports the
accuracy of each, and the paired difference with its standard error.

    python bench/rl_gain.py runs/demo runs/demo-seed1
    python bench/rl_gain.py runs/demo runs/exp-sampling --problems 1000 --held-out-seed 300000

The evaluations are kept under --runs (resumable: an interrupted benchmark continues);
figures go to bench/results/rl_gain.json, merged by run folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from rftt.config import load_config
from rftt.demo_problems import make_problem_files
from rftt.demo_settings import CONFIG_FILE, DemoConfig
from rftt.evaluate import EvalConfig, evaluate
from rftt.stats import paired_difference, wilson_interval

from common import RESULTS, peak_memory_mib, write_results

WEIGHTS_FILE = "model.safetensors"
MODELS = {"warm-up": ("sft/final", "eval-sft"), "rl": ("rl/final", "eval-rl")}
"""Each model the benchmark evaluates: its folder in the run, and the run's evaluation recipe it is scored with."""


def fresh_held_out(run: Path, folder: Path, problems: int, seed: int, candidates: int) -> Path:
    """A held-out file drawn like the run's (its task's questions dropped), with another seed and size."""
    settings = json.loads((run / CONFIG_FILE).read_text())
    settings["held_out"] = {**settings["held_out"], "seed": seed, "size": candidates}
    config = load_config(DemoConfig, base={**settings, "held_out_problems": problems, "output_dir": str(folder)})
    counts = make_problem_files(config, folder / "problems")
    print(f"{run}: {counts['held_out']} held-out problems of {counts['held_out_candidates']} "
          f"({counts['held_out_dropped_as_training_questions']} dropped as training questions)")
    return folder / "problems" / "held_out.jsonl"


def evaluate_model(run: Path, model: str, recipe: str, held_out: Path, folder: Path) -> tuple[dict, dict[str, bool]]:
    """The run's evaluation recipe `recipe` applied to `model` on `held_out`; the summary, and each problem's
    outcome by id."""
    config = load_config(EvalConfig, run / recipe / "recipe.yaml", [
        f"model={run / model}", f"dataset.path={held_out}", f"output_dir={folder}"])
    started = time.perf_counter()
    summary = evaluate(config)
    summary["wall_seconds"] = time.perf_counter() - started
    records = [json.loads(line) for line in (folder / "problems.jsonl").read_text().splitlines()]
    return summary, {record["id"]: record["correct"] for record in records}


def evaluation_key(weights: Path, held_out: Path, recipe: Path) -> str:
    """A hash of what decides an evaluation's outcome: the model's weights, the problems, and the recipe's
    settings other than its paths. Runs copied from one another (`rftt demo --from-run`) share a warm-up."""
    hashed = hashlib.sha256()
    for path in (weights, held_out):
        with path.open("rb") as file:
            while block := file.read(1 << 24):
                hashed.update(block)
    settings = {key: value for key, value in yaml.safe_load(recipe.read_text()).items()
                if key not in ("model", "dataset", "output_dir")}
    hashed.update(json.dumps(settings, sort_keys=True).encode())
    return hashed.hexdigest()[:16]


def measure_run(run: Path, arguments: argparse.Namespace, evaluated: dict[str, tuple]) -> dict[str, Any]:
    """Both models of a run on a fresh held-out set; `evaluated` keeps the evaluations already made, by the
    hash of the model's weights and the held-out file, so a warm-up shared by several runs is scored once."""
    folder = Path(arguments.runs) / run.name
    held_out = fresh_held_out(run, folder, arguments.problems, arguments.held_out_seed, arguments.candidates)
    figures: dict[str, Any] = {"held_out": {"problems": arguments.problems, "seed": arguments.held_out_seed}}
    outcomes = {}
    for name, (model, recipe) in MODELS.items():
        key = evaluation_key(run / model / WEIGHTS_FILE, held_out, run / recipe / "recipe.yaml")
        if key not in evaluated:
            evaluated[key] = evaluate_model(run, model, recipe, held_out, folder / name)
        summary, outcomes[name] = evaluated[key]
        figures[name] = {"evaluation_key": key}
        correct = sum(outcomes[name].values())
        figures[name] |= {"accuracy": correct / len(outcomes[name]), "correct": correct,
                         "interval": wilson_interval(correct, len(outcomes[name])),
                         "extraction_rate": summary["extraction_rate"],
                         "wall_seconds": round(summary["wall_seconds"], 1)}
    ids = list(outcomes["warm-up"])
    figures["rl_minus_warm_up"] = paired_difference([outcomes["warm-up"][problem] for problem in ids],
                                                    [outcomes["rl"][problem] for problem in ids])
    return figures


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'run':<28}{'problems':>9}{'warm-up':>10}{'after RL':>10}{'difference':>12}{'paired SE':>11}"
          f"{'gained/lost':>13}")
    for run, figures in results.items():
        gain = figures["rl_minus_warm_up"]
        print(f"{run:<28}{gain['problems']:>9}{figures['warm-up']['accuracy']:>10.1%}{figures['rl']['accuracy']:>10.1%}"
              f"{gain['difference'] * 100:>+11.1f}p{gain['standard_error'] * 100:>10.1f}p"
              f"{gain['gained']:>7}/{gain['lost']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folders", nargs="+", help="finished `rftt demo` run folders")
    parser.add_argument("--problems", type=int, default=1000, help="held-out problems to evaluate on")
    parser.add_argument("--held-out-seed", type=int, default=300_000,
                        help="the fresh held-out set's seed (the demo's own is 100000, training uses 1)")
    parser.add_argument("--candidates", type=int, default=1600,
                        help="problems drawn before training questions are dropped (must leave --problems)")
    parser.add_argument("--runs", default="runs/bench-rl-gain", help="where the evaluations are kept")
    arguments = parser.parse_args()
    previous = RESULTS / "rl_gain.json"
    results = json.loads(previous.read_text())["runs"] if previous.exists() else {}
    evaluated: dict[str, tuple] = {}
    for run in map(Path, arguments.run_folders):
        results[str(run)] = measure_run(run, arguments, evaluated)
        print_table({str(run): results[str(run)]})
        write_results("rl_gain", {"runs": results, "peak_memory_mib": round(peak_memory_mib(), 1)})  # each run kept
    print_table(results)


if __name__ == "__main__":
    main()
