"""Loaders for the published math benchmarks, each reading its authors' file format into Problems.

Files are never shipped with rftt: the user names a file, or a folder holding the
benchmark's usual file names (see `BENCHMARKS`), or sets `$RFTT_DATA` to a folder with
one sub-folder per benchmark.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rftt.data.files import read_rows
from rftt.data.records import DataError, Problem, Problems, Row, convert_rows

DATA_ENVIRONMENT_VARIABLE = "RFTT_DATA"

_GSM8K_ANSWER_MARK = "####"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_TRAILING_UNIT = re.compile(r"\s*\([^()]*\)\s*$")


def _number_text(text: str) -> str:
    """'27.0' -> '27': integral floats as integers, anything else unchanged."""
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() and "e" not in text.lower() else text


def gsm8k_problem(row: Row, source: str) -> Problem:
    """GSM8K: `question`, and `answer` = worked solution ending `#### N` (calculator notes removed)."""
    question, full_answer = row.text("question"), row.text("answer")
    if _GSM8K_ANSWER_MARK not in full_answer:
        raise row.error("answer", f"no '{_GSM8K_ANSWER_MARK} N' final answer")
    solution, answer = full_answer.rsplit(_GSM8K_ANSWER_MARK, 1)
    answer = answer.strip().replace(",", "")
    if not answer:
        raise row.error("answer", f"empty after '{_GSM8K_ANSWER_MARK}'")
    return Problem(f"{source}/{row.index}", question, answer, "gsm8k", _CALCULATOR_ANNOTATION.sub("", solution).strip())


def reft_problem(row: Row, source: str) -> Problem:
    """ReFT's release (SVAMP, MathQA): `item_id`, `question`, `answer_value`, optional `answer_cot`."""
    return Problem(
        row.text("item_id"), row.text("question"), _number_text(row.text("answer_value")), source.split("/")[0],
        row.optional_text("answer_cot"),
    )


def math500_problem(row: Row, source: str) -> Problem:
    """MATH-500: `problem`, `answer`, `solution`, `unique_id`, `subject`, `level`."""
    metadata = {key: row.data[key] for key in ("subject", "level") if key in row.data}
    return Problem(
        row.text("unique_id"), row.text("problem"), row.text("answer"), "math500", row.optional_text("solution"),
        metadata,
    )


def mawps_problem(row: Row, source: str) -> Problem:
    """MAWPS (Qwen2.5-Math's copy): `input`, numeric `target`."""
    return Problem(f"{source}/{row.index}", row.text("input"), _number_text(row.text("target")), source.split("/")[0])


def asdiv_problem(row: Row, source: str) -> Problem:
    """ASDiv: `body` + `question`; `answer` like '9 (apples)' loses its unit; `formula` kept as metadata."""
    question = f"{row.text('body')} {row.text('question')}"
    answer = _TRAILING_UNIT.sub("", row.text("answer")) or row.text("answer")
    identifier = row.optional_text("idx") or str(row.index)
    return Problem(f"asdiv/{identifier}", question, answer, "asdiv", None, {"formula": row.optional_text("formula")})


def competition_problem(row: Row, source: str) -> Problem:
    """AIME/AMC as released with RFTT: `id`, `problem`, `answer` (a float for AMC), optional `solution`."""
    return Problem(
        f"{source.split('/')[0]}/{row.text('id')}", row.text("problem"), _number_text(row.text("answer")),
        source.split("/")[0], row.optional_text("solution"),
    )


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's default folder name, its split files, and how a row becomes a Problem."""

    folder: str
    splits: dict[str, str]
    default_split: str
    to_problem: Callable[[Row, str], Problem]


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", {"train": "train.jsonl", "test": "test.jsonl"}, "test", gsm8k_problem),
    "svamp": Benchmark(
        "svamp", {"test": "test.json", "train": "train_cot.json", "train_cot": "train_cot.json",
                  "train_pot": "train_pot.json"}, "test", reft_problem,
    ),
    "math500": Benchmark("math500", {"test": "test.jsonl"}, "test", math500_problem),
    "mawps": Benchmark("mawps", {"multiarith": "multiarith.jsonl", "addsub": "addsub.jsonl"}, "multiarith", mawps_problem),
    "asdiv": Benchmark("asdiv", {"test": "test.jsonl"}, "test", asdiv_problem),
    "mathqa": Benchmark("mathqa", {"test": "test_choice.json"}, "test", reft_problem),
    "aime24": Benchmark("competition", {"test": "aime24_test.jsonl"}, "test", competition_problem),
    "amc23": Benchmark("competition", {"test": "amc23_test.jsonl"}, "test", competition_problem),
}


def benchmark_file(name: str, path: str | Path | None, split: str | None) -> Path:
    """The file to read for benchmark `name`: `path` itself if a file, else the split's file inside it."""
    benchmark = BENCHMARKS[name]
    split = split or benchmark.default_split
    if split not in benchmark.splits:
        raise DataError(f"dataset {name}", None, "split", f"unknown split {split!r}; choose from {sorted(benchmark.splits)}")
    if path is None:
        if not os.environ.get(DATA_ENVIRONMENT_VARIABLE):
            raise DataError(
                f"dataset {name}", None, "path",
                f"no data location: pass path= (a file, or a folder with {benchmark.splits[split]}) "
                f"or set ${DATA_ENVIRONMENT_VARIABLE} to a folder holding {benchmark.folder}/",
            )
        path = Path(os.environ[DATA_ENVIRONMENT_VARIABLE]) / benchmark.folder
    path = Path(path)
    return path / benchmark.splits[split] if path.is_dir() else path


def load_benchmark(name: str, path: str | Path | None, split: str | None, *, skip_bad: bool) -> Problems:
    """All problems of one split of a named benchmark."""
    file = benchmark_file(name, path, split)
    source = f"{name}/{split or BENCHMARKS[name].default_split}"
    return convert_rows(read_rows(file), lambda row: BENCHMARKS[name].to_problem(row, source), skip_bad=skip_bad)
