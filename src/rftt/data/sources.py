"""Problem sources beyond the named benchmarks: any JSON/JSONL file, any hub dataset, reasoning-gym."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from rftt.data.files import read_rows
from rftt.data.records import DataError, Problem, Problems, Row, convert_rows

DEFAULT_FIELDS: dict[str, str | None] = {"id": None, "question": "question", "answer": "answer", "solution": None}


def field_mapping(fields: Mapping[str, str] | None, location: str) -> dict[str, str | None]:
    """Which source field fills each Problem field; unknown Problem fields are an error."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(DEFAULT_FIELDS))
    if unknown:
        raise DataError(location, None, "fields", f"unknown keys {unknown}; map any of {list(DEFAULT_FIELDS)}")
    return {**DEFAULT_FIELDS, **fields}


def mapped_problem(row: Row, fields: Mapping[str, str | None], source: str) -> Problem:
    """A Problem from a row whose field names are given by `fields` (id defaults to the row position)."""
    question, answer = row.text(fields["question"]), row.text(fields["answer"])
    identifier = row.text(fields["id"]) if fields["id"] else f"{source}/{row.index}"
    solution = row.optional_text(fields["solution"]) if fields["solution"] else None
    return Problem(identifier, question, answer, source, solution)


def load_json_file(path: str | Path, fields: Mapping[str, str] | None, *, skip_bad: bool) -> Problems:
    """Problems from any `.json` array or `.jsonl` file, with a field mapping."""
    mapping = field_mapping(fields, str(path))
    source = Path(path).stem
    return convert_rows(read_rows(path), lambda row: mapped_problem(row, mapping, source), skip_bad=skip_bad)


def load_hub_dataset(
    dataset_id: str, split: str | None, config: str | None, fields: Mapping[str, str] | None, *, skip_bad: bool
) -> Problems:
    """Problems from a Hugging Face hub dataset (or a local dataset folder) through `datasets`."""
    import datasets

    split = split or "test"
    location = f"hub dataset {dataset_id} (split {split})"
    mapping = field_mapping(fields, location)
    try:
        table = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # datasets raises many unrelated types for a missing or offline dataset
        raise DataError(location, None, None, f"could not load: {error}") from None
    rows = (Row(dict(record), location, index + 1, index, unit="row") for index, record in enumerate(table))
    return convert_rows(rows, lambda row: mapped_problem(row, mapping, dataset_id), skip_bad=skip_bad)


def load_reasoning_gym(task: str, size: int, seed: int, options: Mapping[str, Any]) -> Problems:
    """Procedurally generated problems from a reasoning-gym task; item i is the same for a given seed."""
    import reasoning_gym

    location = f"reasoning-gym task {task}"
    try:
        generated = reasoning_gym.create_dataset(task, size=size, seed=seed, **options)
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise DataError(location, None, None, f"could not create it with size={size}, seed={seed}, {dict(options)}: {error}") from None
    return Problems(_gym_problems(task, seed, generated))


def _gym_problems(task: str, seed: int, entries: Iterable[Mapping[str, Any]]) -> Iterable[Problem]:
    for index, entry in enumerate(entries):
        yield Problem(
            f"{task}/{seed}/{index}", entry["question"], str(entry["answer"]), f"reasoning_gym/{task}",
            None, dict(entry.get("metadata", {})),
        )
