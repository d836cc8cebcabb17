"""Accuracy of the demo's evaluation stages, counted from their per-problem records: per stage, per kind of
problem, and each stage's paired change against the one before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rftt.jsonl import read_records
from rftt.stats import paired_difference, wilson_interval
from rftt.voting import majority_vote

EVAL_STAGES = {"baseline": "start model", "eval-sft": "after SFT warm-up", "eval-rl": "after RL"}
TREE_STAGE = "eval-rl-tree"
GAIN_PAIRS = (("baseline", "eval-sft"), ("eval-sft", "eval-rl"))


def accuracy_row(label: str, correct: int, problems: int, extracted: int | None = None) -> dict[str, Any]:
    """Accuracy with its 95% interval and, when known, the share of answers stated and accuracy among them."""
    low, high = wilson_interval(correct, problems)
    row = {"stage": label, "problems": problems, "correct": correct, "accuracy": correct / problems if problems else 0.0,
           "interval": [low, high]}
    if extracted is not None:
        row.update(extraction_rate=extracted / problems if problems else 0.0,
                   accuracy_among_extracted=correct / extracted if extracted else 0.0)
    return row


def eval_rows(run: Path) -> dict[str, dict[str, Any]]:
    """Greedy rows per eval stage, counted from its per-problem records; tree rows per rollout count."""
    rows = {}
    for stage, label in EVAL_STAGES.items():
        records = read_records(run / stage / "problems.jsonl")
        if records:
            rows[stage] = accuracy_row(label, sum(record["correct"] for record in records), len(records),
                                       sum(record["answer"] is not None for record in records))
    tree_records = read_records(run / TREE_STAGE / "problems.jsonl")
    for count in (tree_records[0]["by_rollouts"] if tree_records else []):
        outcomes = [record["by_rollouts"][count] for record in tree_records]
        rows[f"tree-{count}"] = accuracy_row(f"after RL, tree search, {count} rollouts",
                                             sum(outcome["correct"] for outcome in outcomes), len(outcomes),
                                             sum(outcome["answer"] is not None for outcome in outcomes))
    return rows


def stage_gains(run: Path) -> dict[str, dict[str, Any]]:
    """For each stage against the one before it, the paired change of greedy accuracy on the same problems."""
    outcomes = {stage: {record["id"]: bool(record["correct"]) for record in read_records(run / stage / "problems.jsonl")}
                for stage in EVAL_STAGES}
    gains = {}
    for before, after in GAIN_PAIRS:
        shared = [problem for problem in outcomes[before] if problem in outcomes[after]]
        if shared:
            gains[f"{before} -> {after}"] = {"from": EVAL_STAGES[before], "to": EVAL_STAGES[after], **paired_difference(
                [outcomes[before][problem] for problem in shared], [outcomes[after][problem] for problem in shared])}
    return gains


PROBLEM_KINDS: dict[str, Callable[[str, str], bool]] = {
    "addition": lambda question, gold: " + " in question,
    "subtraction": lambda question, gold: " - " in question,
    "negative answer": lambda question, gold: gold.strip().startswith("-"),
    "parentheses": lambda question, gold: "(" in question,
}
"""Kinds of arithmetic problem the report splits accuracy by (a problem may be of several kinds)."""


def gains_by_kind(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per kind of problem with any problems: each greedy stage's accuracy and each stage's paired change."""
    records = {stage: read_records(run / stage / "problems.jsonl") for stage in EVAL_STAGES}
    kinds: dict[str, dict[str, Any]] = {}
    for kind, is_kind in PROBLEM_KINDS.items():
        chosen = {stage: {record["id"]: bool(record["correct"]) for record in stage_records
                          if is_kind(record["question"], record["gold"])} for stage, stage_records in records.items()}
        if not any(chosen.values()):
            continue
        kinds[kind] = {stage: accuracy_row(EVAL_STAGES[stage], sum(outcomes.values()), len(outcomes))
                       for stage, outcomes in chosen.items() if outcomes}
        for before, after in GAIN_PAIRS:
            shared = [problem for problem in chosen[before] if problem in chosen[after]]
            if shared:
                kinds[kind][f"{before} -> {after}"] = paired_difference(
                    [chosen[before][problem] for problem in shared], [chosen[after][problem] for problem in shared])
    return kinds


def kind_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per kind of problem: its count, accuracy at each greedy stage, and RL's paired change with its error."""
    rows = []
    for kind, stages in summary["by_kind"].items():
        change = stages.get("eval-sft -> eval-rl")
        rows.append([kind, str(max(row["problems"] for name, row in stages.items() if name in EVAL_STAGES)),
                     *[f"{stages[stage]['accuracy']:.1%}" if stage in stages else "" for stage in EVAL_STAGES],
                     f"{change['difference']:+.1%} ({change['standard_error']:.1%})" if change else ""])
    return rows


KIND_HEADER = ["kind", "problems", *EVAL_STAGES.values(), "RL - SFT (paired SE)"]


def tree_diagnostics(run: Path) -> dict[str, dict[str, float]]:
    """What inference-time search had to work with, per rollout count: the value-weighted vote the stage reports,
    a plain majority vote of the same terminals, the share of problems whose answered terminals all agree (search
    cannot change those), and pass@N (some terminal correct: the ceiling of any vote)."""
    records = read_records(run / TREE_STAGE / "problems.jsonl")
    diagnostics = {}
    for count in (records[0]["by_rollouts"] if records else []):
        first = [(record["extracted"][: int(count)], record["sample_correct"][: int(count)]) for record in records]
        diagnostics[count] = {
            "weighted_vote": sum(record["by_rollouts"][count]["correct"] for record in records) / len(records),
            "majority_vote": sum(majority_vote(answers, correct).correct for answers, correct in first) / len(records),
            "terminals_agree": sum(len({a for a in answers if a is not None}) <= 1 for answers, _ in first)
            / len(records),
            "pass_at_n": sum(any(correct) for _, correct in first) / len(records),
        }
    return diagnostics
