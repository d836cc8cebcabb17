"""rftt's own RL pipelines against the reference TRL glue, on the same problems, prompts and wall time.

A pipeline is rftt's commands run as a user would, each from its shipped recipe: rejection sampling
(`rftt eval`, recipes/eval_sample_arithmetic.yaml), the warm-up (`rftt sft`, recipes/sft_sampled_arithmetic.yaml),
then RL (`rftt rl`, recipes/grpo_sampled_arithmetic.yaml or recipes/reft_sampled_arithmetic.yaml) until the
pipeline has used the glue's wall time (bench/demo_vs_trl.py, same task, precision and seed). Every model is
scored as the glue's are: greedy, strict, on the reference task's 200 held-out problems (bench/reference_task.py).

    python bench/rl_parity.py --pipeline grpo --seed 0        # after bench/demo_vs_trl.py --seed 0
    python bench/rl_parity.py --table                          # the table of every run so far

Figures go to bench/results/rl_parity.json (merged by label); models and per-problem records to --runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from reference_task import held_out_accuracy, paired_change, reference_splits

from rftt.config import load_config
from rftt.evaluate import EvalConfig, evaluate
from rftt.models import load_model
from rftt.train.rl import RLConfig, run_rl
from rftt.train.sft import SFTConfig, run_sft

from common import RESULTS, cpu_flags, peak_memory_mib, write_results

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
RL_RECIPES = {"grpo": "grpo_sampled_arithmetic.yaml", "reft": "reft_sampled_arithmetic.yaml"}
PRECISIONS = ("fp32", "bf16")
CURVE_BLOCK = 5
CURVE_METRICS = ("accuracy", "response_length", "entropy", "kl", "grad_norm", "value_grad_norm", "step_seconds")
DEFAULT_MINUTES = 31.0  # the reference glue's wall time: 475 s sampling, 200 s SFT, 20 min GRPO


def glue_seconds(task: str, precision: str, seed: int, stage: str | None = None) -> float | None:
    """The wall time of the glue run with the same task, precision and seed (of one `stage`, or all), if any."""
    path = RESULTS / "demo_vs_trl.json"
    run = json.loads(path.read_text())["runs"].get(f"{task}-{precision}-seed{seed}") if path.exists() else None
    if run is None:
        return None
    return run["stage_seconds"][stage] if stage else run["pipeline_seconds"]


def score(model_folder: Path, held_out, output: Path, precision: str) -> dict[str, Any]:
    model, tokenizer = load_model(str(model_folder), dtype=torch.float32)
    return held_out_accuracy(model, tokenizer, held_out, output, precision)


def run_pipeline(pipeline: str, task: str, seed: int, precision: str, budget_seconds: float,
                 folder: Path) -> dict[str, Any]:
    """Sampling, SFT and RL from the shipped recipes; RL gets what is left of `budget_seconds`."""
    _, held_out = reference_splits(task)
    warm_up = warm_up_pipeline(task, seed, precision, folder)
    after_sft = score(folder / "sft" / "final", held_out, folder / "eval-sft.jsonl", precision)
    print(f"after SFT: {after_sft['accuracy']:.1%}", flush=True)
    left = budget_seconds - sum(warm_up["stage_seconds"].values())
    rl = rl_stage(pipeline, task, seed, precision, folder / "sft" / "final", left, held_out, folder)
    return {**warm_up, **rl, "pipeline": pipeline, "task": task, "seed": seed, "precision": precision,
            "budget_seconds": round(budget_seconds, 1), "after_sft": after_sft,
            "rl_minus_sft": paired_change(folder / "eval-sft.jsonl", folder / "eval-rl.jsonl"),
            "stage_seconds": {**warm_up["stage_seconds"], **rl["stage_seconds"]},
            "pipeline_seconds": round(sum(warm_up["stage_seconds"].values()) + rl["stage_seconds"]["rl"], 1)}


def warm_up_pipeline(task: str, seed: int, precision: str, folder: Path) -> dict[str, Any]:
    """Rejection sampling (`rftt eval`) and SFT on the correct samples (`rftt sft`), timed."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    sampling = load_config(EvalConfig, RECIPES / "eval_sample_arithmetic.yaml", [
        f"dataset.name={task}", f"seed={seed}", f"precision={precision}", f"output_dir={folder / 'sample'}"])
    sampled = evaluate(sampling, progress=False)
    seconds["rejection_sampling"] = time.perf_counter() - started
    mark = time.perf_counter()
    sft = load_config(SFTConfig, RECIPES / "sft_sampled_arithmetic.yaml", [
        f"data.path={folder / 'sample' / 'problems.jsonl'}", f"seed={seed}", f"precision={precision}",
        f"output_dir={folder / 'sft'}"])
    sft_summary = run_sft(sft)
    seconds["sft"] = time.perf_counter() - mark
    return {"sample_accuracy": sampled["sample_accuracy"], "sft_examples": sft_summary["examples"],
            "sft_steps": sft_summary["steps"], "stage_seconds": {name: round(value, 1) for name, value in seconds.items()}}


def rl_stage(pipeline: str, task: str, seed: int, precision: str, start: Path, seconds: float, held_out,
             folder: Path) -> dict[str, Any]:
    """`rftt rl` from `start` for `seconds` of wall time, then the held-out score of its final model."""
    rl = load_config(RLConfig, RECIPES / RL_RECIPES[pipeline], [
        f"dataset.name={task}", f"model={start}", f"seed={seed}", f"precision={precision}",
        f"max_minutes={max(seconds, 60.0) / 60}", f"output_dir={folder / 'rl'}"])
    started = time.perf_counter()
    history = run_rl(rl)
    rl_seconds = time.perf_counter() - started
    return {"rl_steps": len(history), "after_rl": score(folder / "rl" / "final", held_out, folder / "eval-rl.jsonl",
                                                       precision),
            "rl_curve": learning_curve(history),
            "stage_seconds": {"rl": round(rl_seconds, 1)}}


def learning_curve(history: list[dict[str, Any]], block: int = CURVE_BLOCK) -> list[dict[str, float]]:
    """The RL steps' metrics averaged over blocks of `block` steps (the run folder's metrics.jsonl has each step)."""
    curve = []
    for first in range(0, len(history), block):
        steps = history[first : first + block]
        curve.append({"steps": f"{steps[0]['step']}-{steps[-1]['step']}", **{
            key: round(sum(step[key] for step in steps) / len(steps), 3)
            for key in CURVE_METRICS if all(key in step for step in steps)}})
    return curve


def rl_from(pipeline: str, task: str, seed: int, precision: str, start: Path, seconds: float,
            folder: Path) -> dict[str, Any]:
    """RL alone from a given warm-up (the glue's), for `seconds`: the two RL loops on the very same start."""
    _, held_out = reference_splits(task)
    after_sft = score(start, held_out, folder / "eval-sft.jsonl", precision)
    rl = rl_stage(pipeline, task, seed, precision, start, seconds, held_out, folder)
    return {**rl, "pipeline": f"{pipeline} from {start}", "task": task, "seed": seed, "precision": precision,
            "budget_seconds": round(seconds, 1), "after_sft": after_sft,
            "rl_minus_sft": paired_change(folder / "eval-sft.jsonl", folder / "eval-rl.jsonl"),
            "pipeline_seconds": rl["stage_seconds"]["rl"]}


def table() -> str:
    """Every glue and rftt run so far: accuracy after each stage with its interval, wall seconds, and (where both
    runs' per-problem records are here) the paired difference after RL against the glue run of the same seed."""
    runs = []
    for name in ("demo_vs_trl", "rl_parity"):
        path = RESULTS / f"{name}.json"
        runs += list(json.loads(path.read_text())["runs"].values()) if path.exists() else []
    glue = {(run["task"], run["precision"], run["seed"]): run for run in runs if run["pipeline"] == "trl glue"}
    rows = ["| pipeline | task | precision | seed | after warm-up | after RL | RL - warm-up (SE) | RL steps | "
            "pipeline s | after RL - glue (SE) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        reference = glue.get((run["task"], run["precision"], run["seed"]))
        records = [Path(item["after_rl"]["records"]) for item in (reference, run) if item and item["after_rl"]["records"]]
        against = _change(paired_change(*records)) if run is not reference and len(records) == 2 and \
            all(path.exists() for path in records) else ""
        rows.append(f"| {run['pipeline']} | {run['task']} | {run['precision']} | {run['seed']} | "
                    f"{_accuracy(run['after_sft'])} | {_accuracy(run['after_rl'])} | "
                    f"{_change(run['rl_minus_sft'])} | {run['rl_steps']} | {run['pipeline_seconds']:.0f} | {against} |")
    return "\n".join(rows)


def _accuracy(result: dict[str, Any]) -> str:
    low, high = result["interval"]
    return f"{result['accuracy']:.1%} [{low:.1%}, {high:.1%}]"


def _change(change: dict[str, float]) -> str:
    return f"{change['difference'] * 100:+.1f} ({change['standard_error'] * 100:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=sorted(RL_RECIPES), default="grpo")
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--minutes", type=float, help="the pipeline's wall budget (default: the glue run's)")
    parser.add_argument("--start", help="RL only, from this warm-up folder (for example the glue's sft folder), "
                                        "for the glue's GRPO seconds unless --minutes")
    parser.add_argument("--start-name", default="glue-warm-up", help="how the run's label names --start")
    parser.add_argument("--runs", default="runs/bench-rl-parity")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs so far")
    arguments = parser.parse_args()
    if not arguments.table:
        label = f"{arguments.pipeline}-{arguments.task}-{arguments.precision}-seed{arguments.seed}"
        label += f"-from-{arguments.start_name}" if arguments.start else ""
        stage = "grpo" if arguments.start else None
        budget = arguments.minutes * 60 if arguments.minutes else \
            glue_seconds(arguments.task, arguments.precision, arguments.seed, stage) or DEFAULT_MINUTES * 60
        folder = Path(arguments.runs) / label
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        result = rl_from(arguments.pipeline, arguments.task, arguments.seed, arguments.precision,
                         Path(arguments.start), budget, folder) if arguments.start else \
            run_pipeline(arguments.pipeline, arguments.task, arguments.seed, arguments.precision, budget, folder)
        result["peak_memory_mib"] = round(peak_memory_mib(), 1)
        path = RESULTS / "rl_parity.json"
        runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
        runs[label] = {**result, "cpu_flags": cpu_flags()}
        write_results("rl_parity", {"runs": runs})
    print(table())


if __name__ == "__main__":
    main()
