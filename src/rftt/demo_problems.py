"""The demo's `problems` stage: training problems, a dev split carved from them, and held-out problems that
share no question with training, written as JSONL so that every later stage can be re-run alone on them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rftt.config import ConfigError
from rftt.data import Problem, load_problems
from rftt.jsonl import append_records

if TYPE_CHECKING:
    from rftt.demo_settings import DemoConfig


def _problem_records(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    return [{"id": problem.id, "question": problem.question, "answer": problem.answer} for problem in problems]


def _question_text(problem: Problem) -> str:
    """A problem's question with its white space normalised, as the splits compare questions."""
    return " ".join(problem.question.split())


def split_off_dev(task: Sequence[Problem], count: int) -> tuple[list[Problem], list[Problem], int]:
    """Training problems, the dev split, and how many problems of the dev split's stretch stayed in training.
    Dev is the last `count` problems whose question occurs once in the task, so that no dev question is also a
    training question (small digit ranges repeat; a repeated one would make dev accuracy partly recall)."""
    occurrences = Counter(_question_text(problem) for problem in task)
    dev_rows = [row for row in reversed(range(len(task))) if occurrences[_question_text(task[row])] == 1][:count]
    if len(dev_rows) < count:
        raise ConfigError(f"config.dev_problems: only {len(dev_rows)} of the task's {len(task)} questions occur once; "
                          f"{count} are needed (raise task.size)")
    chosen = set(dev_rows)
    train = [problem for row, problem in enumerate(task) if row not in chosen]
    dev = [task[row] for row in sorted(dev_rows)]
    return train, dev, len(task) - min(dev_rows, default=len(task)) - count


def make_problem_files(config: DemoConfig, folder: Path) -> dict[str, Any]:
    """train/dev/held-out JSONL files: dev is carved from the end of the task's problems, and neither dev nor
    held-out shares a question with training."""
    folder.mkdir(parents=True, exist_ok=True)
    task = list(load_problems(config.task))
    if len(task) <= config.dev_problems + config.search_problems:
        raise ConfigError(f"config.task: {len(task)} problems cannot give {config.search_problems} search problems "
                          f"and {config.dev_problems} dev problems")
    train, dev, kept_in_training = split_off_dev(task, config.dev_problems)
    seen = {_question_text(problem) for problem in task}
    candidates = list(load_problems(config.held_out))
    held_out = [problem for problem in candidates if _question_text(problem) not in seen]
    duplicates = len(candidates) - len(held_out)
    if len(held_out) < config.held_out_problems:
        raise ConfigError(f"config.held_out: only {len(held_out)} of {len(candidates)} problems are not training "
                          f"questions; {config.held_out_problems} are needed (raise held_out.size)")
    held_out = held_out[: config.held_out_problems]
    for name, problems in (("train", train), ("dev", dev), ("held_out", held_out)):
        path = folder / f"{name}.jsonl"
        path.unlink(missing_ok=True)
        append_records(path, _problem_records(problems))
    return {"train": len(train), "dev": len(dev), "repeated_questions_kept_in_training": kept_in_training,
            "held_out": len(held_out), "held_out_candidates": len(candidates),
            "held_out_dropped_as_training_questions": duplicates}
