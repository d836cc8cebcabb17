"""`rftt demo` as a user runs it, measured: stage seconds planned and taken, accuracy per stage on the demo's
held-out problems and on their first 200 (the reference task's held-out set, which the faithful TRL glue of
bench/demo_vs_trl.py is scored on), RL's paired change, accuracy per kind of problem and inference-time search.

    python bench/demo.py --seed 0 --fp32                 # the demo with bf16 switched off (RFTT_NATIVE_BF16=0)
    python bench/demo.py --seed 0 --fp32 --no-functional-tokens --from-run runs/bench-demo/fp32-seed0
    python bench/demo.py --table                         # every run so far, beside the glue's

Figures go to bench/results/demo.json (merged by label); run folders to --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from common import RESULTS, cpu_flags, cpu_model, peak_memory_mib, write_results

REFERENCE_PROBLEMS = 200
GLUE_SNAPSHOT = "10min"  # the glue's GRPO snapshot whose pipeline time is nearest the demo's 25 minutes


def run(arguments: argparse.Namespace, previous: dict[str, Any]) -> dict[str, Any]:
    """Run (or continue) the demo in this process and collect its figures. A run that was already finished only
    has its figures refreshed: its process seconds and peak memory stay those `previous` measured."""
    if arguments.fp32:
        os.environ["RFTT_NATIVE_BF16"] = "0"  # before rftt reads the CPU's flags
    from rftt.demo import demo_config, run_demo

    label = f"{'fp32' if arguments.fp32 else 'native'}-seed{arguments.seed}" + \
        ("-no-functional-tokens" if arguments.no_functional_tokens else "") + (f"-{arguments.variant}" if arguments.variant else "")
    flags: dict[str, Any] = {"seed": arguments.seed, "output_dir": str(Path(arguments.runs) / label)}
    if arguments.no_functional_tokens:
        flags["functional_tokens"] = False
    folder = Path(flags["output_dir"])
    finished = _finished(folder)
    started = time.perf_counter()
    summary = run_demo(demo_config(recipe=arguments.config, overrides=arguments.set, flags=flags),
                       from_run=arguments.from_run)
    measured = {"wall_seconds_this_process": round(time.perf_counter() - started, 1),
                "peak_memory_mib": peak_memory_mib(), "cpu_flags": cpu_flags(), "cpu_model": cpu_model()}
    if finished and label in previous:
        measured = {key: previous[label].get(key) for key in measured}
    return {label: {**figures(folder, summary), **measured, "config": arguments.config, "set": arguments.set,
                    "from_run": arguments.from_run}}


def _finished(folder: Path) -> bool:
    """Whether the demo in `folder` ran every stage already (its report is all a rerun would make)."""
    path = folder / "stages.json"
    stages = json.loads(path.read_text()) if path.exists() else {}
    return bool(stages.get("eval-rl-tree", {}).get("done"))


def figures(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The demo's summary figures, plus each greedy stage on the first 200 held-out problems."""
    from rftt.jsonl import read_records
    from rftt.stats import paired_difference

    first = {stage: read_records(folder / stage / "problems.jsonl")[:REFERENCE_PROBLEMS]
             for stage in ("baseline", "eval-sft", "eval-rl")}
    reference = {stage: sum(record["correct"] for record in records) / len(records)
                 for stage, records in first.items() if records}
    pairs = [(before["correct"], after["correct"]) for before, after in zip(first["eval-sft"], first["eval-rl"])]
    greedy = {record["id"]: record["correct"] for record in first["eval-rl"]}
    trees = [record for record in read_records(folder / "eval-rl-tree" / "problems.jsonl") if record["id"] in greedy]
    return {
        "accuracy": {name: {key: row[key] for key in ("accuracy", "interval", "correct", "problems")}
                     for name, row in summary["accuracy"].items()},
        "gains": summary["gains"], "by_kind": summary["by_kind"], "tree_search": summary["tree_search"],
        "reference_200": reference,
        "reference_200_rl_minus_sft": paired_difference([b for b, _ in pairs], [a for _, a in pairs]),
        "tree_minus_greedy": {count: paired_difference([greedy[record["id"]] for record in trees],
                                                       [record["by_rollouts"][count]["correct"] for record in trees])
                              for count in (trees[0]["by_rollouts"] if trees else [])},
        "stages": {name: {"seconds": stage["seconds"], "planned_seconds": stage["planned_seconds"],
                          "reused_from": stage["reused_from"]} for name, stage in summary["stages"].items()},
        "total_seconds": summary["total_seconds"], "plan": summary["plan"],
        "rl_steps": len([point for point in summary["rl_curve"] if point["step"] >= 0]),
    }


def compact(value: Any) -> Any:
    """Figures as stored: floats to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, dict):
        return {key: compact(item) for key, item in value.items()}
    return value


def stored(figures_: dict[str, Any]) -> dict[str, Any]:
    """A run's figures as stored: compact, and per kind of problem only counts and changes (each row's interval
    and stage name follow from them)."""
    by_kind = {kind: {stage: {key: value for key, value in row.items() if key not in ("interval", "stage")}
                      for stage, row in stages.items()} for kind, stages in figures_.get("by_kind", {}).items()}
    return compact({**figures_, "by_kind": by_kind})


def glue_rows() -> list[list[str]]:
    """The faithful TRL glue's figures on the reference 200 (bench/demo_vs_trl.py)."""
    path = RESULTS / "demo_vs_trl.json"
    rows = []
    for label, glue in (json.loads(path.read_text())["runs"].items() if path.exists() else []):
        snapshot = glue["snapshots"][GLUE_SNAPSHOT]
        seconds = glue["stage_seconds"]["rejection_sampling"] + glue["stage_seconds"]["sft"] + snapshot["seconds"]
        rows.append([f"TRL glue {label}, GRPO 10 min", f"{seconds:.0f}", "", f"{glue['after_sft']['accuracy']:.1%}",
                     f"{snapshot['accuracy']['accuracy']:.1%}", ""])
        rows.append([f"TRL glue {label}, GRPO 20 min", f"{glue['pipeline_seconds']:.0f}", "",
                     f"{glue['after_sft']['accuracy']:.1%}", f"{glue['after_rl']['accuracy']:.1%}", ""])
    return rows


def table(runs: dict[str, Any]) -> str:
    header = ["run", "wall s", "held-out: SFT -> RL (paired SE)", "first 200: SFT", "first 200: RL", "tree 16 vs greedy"]
    rows = []
    for label, figures_ in runs.items():
        gain = figures_["gains"].get("eval-sft -> eval-rl", {})
        accuracy = figures_["accuracy"]
        tree = accuracy.get("tree-16", {}).get("accuracy")
        rows.append([label, f"{figures_['total_seconds']:.0f}",
                     f"{accuracy['eval-sft']['accuracy']:.1%} -> {accuracy['eval-rl']['accuracy']:.1%} "
                     f"({gain.get('difference', 0):+.1%}, {gain.get('standard_error', 0):.1%})",
                     f"{figures_['reference_200']['eval-sft']:.1%}", f"{figures_['reference_200']['eval-rl']:.1%}",
                     f"{tree:.1%}" if tree is not None else ""])
    rows += glue_rows()
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)) for row in [header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp32", action="store_true", help="switch the CPU's bf16 off (RFTT_NATIVE_BF16=0)")
    parser.add_argument("--no-functional-tokens", action="store_true")
    parser.add_argument("--from-run", help="a finished demo run whose matching stages this run takes")
    parser.add_argument("--config", help="a demo recipe on top of the defaults (a variant)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", help="a name for a variant's label and run folder")
    parser.add_argument("--runs", default="runs/bench-demo")
    parser.add_argument("--table", action="store_true", help="print the table of every run so far and stop")
    arguments = parser.parse_args()
    path = RESULTS / "demo.json"
    previous = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if not arguments.table:
        previous["runs"].update(run(arguments, previous["runs"]))
        write_results("demo", {"runs": {label: stored(figures_) for label, figures_ in previous["runs"].items()}},
                      indent=None)
    print(table(previous["runs"]))


if __name__ == "__main__":
    main()
