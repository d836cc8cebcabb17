"""`load_problems`: one entry point for every dataset, chosen by name.

Names: a benchmark (`gsm8k`, `svamp`, `math500`, `mawps`, `asdiv`, `mathqa`, `aime24`,
`amc23`), `json` (any JSON/JSONL file with a field mapping), `hub:<dataset id>`,
`reasoning_gym:<task>`, or a preset such as `arithmetic` (the offline default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from rftt.data.benchmarks import BENCHMARKS, load_benchmark
from rftt.data.records import DataError, Problems
from rftt.data.sources import load_hub_dataset, load_json_file, load_reasoning_gym
from rftt.verify.outcome import GoldFormat, gold_format_problem

HUB_PREFIX = "hub:"
REASONING_GYM_PREFIX = "reasoning_gym:"
DEFAULT_GENERATED_SIZE = 1000
DEFAULT_DATASET = "arithmetic"


@dataclass(frozen=True)
class Preset:
    """A named, fully specified generated problem set; `summary` says in words what `options` fix."""

    name: str
    options: dict[str, Any]
    summary: str

    @property
    def description(self) -> str:
        """The summary and every option the generator is called with, so nothing is hidden by a default."""
        settings = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{self.summary} ({self.name}: {settings})"


_TWO_TERM_ARITHMETIC = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-"),
                        "format_style": "simple", "whitespace": "single"}
PRESETS: dict[str, Preset] = {
    "arithmetic": Preset(
        "reasoning_gym:basic_arithmetic",
        {**_TWO_TERM_ARITHMETIC, "allow_parentheses": False, "allow_negation": False},
        "two-term addition and subtraction of non-negative numbers up to 100, no parentheses, no negation "
        "('Calculate 66 - 65.')",
    ),
    "arithmetic_with_negation_and_parentheses": Preset(
        "reasoning_gym:basic_arithmetic",
        {**_TWO_TERM_ARITHMETIC, "allow_parentheses": True, "allow_negation": True},
        "two-term addition and subtraction of numbers up to 100 that may be negated and parenthesised "
        "('Calculate ( -( 8 - -5 ) ).', '80 + -57')",
    ),
}


@dataclass(frozen=True)
class DatasetSpec:
    """Which problems to load. Fields that a kind of dataset does not use must stay unset."""

    name: str = DEFAULT_DATASET
    path: str | None = None
    split: str | None = None
    offset: int = 0               # leave out the first `offset` problems (before `limit`): a dev split of the
    limit: int | None = None      # first N (`limit: N`) and training on the rest (`offset: N`) never overlap
    skip_bad: bool = False
    gold_format: GoldFormat = "auto"  # how the golds are written: `value`, `latex` text, or `auto` (see rftt.verify.Gold)
    fields: dict[str, str] | None = None
    config: str | None = None
    size: int | None = None
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


_USED_BY = {
    "benchmark": {"path", "split"},
    "json": {"path", "fields"},
    "hub": {"split", "fields", "config"},
    "generated": {"size", "seed", "options"},
}


def dataset_names() -> list[str]:
    """Every name `load_problems` accepts (prefix names shown with a placeholder)."""
    return [*BENCHMARKS, "json", *PRESETS, f"{HUB_PREFIX}<dataset id>", f"{REASONING_GYM_PREFIX}<task>"]


def _kind(name: str) -> str:
    if name in BENCHMARKS:
        return "benchmark"
    if name == "json":
        return "json"
    if name.startswith(HUB_PREFIX):
        return "hub"
    if name.startswith(REASONING_GYM_PREFIX) or name in PRESETS:
        return "generated"
    raise DataError(f"dataset {name!r}", None, "name", f"unknown dataset; choose from {dataset_names()}")


def _check_unused_settings(spec: DatasetSpec, kind: str) -> None:
    always = {"name", "offset", "limit", "skip_bad", "gold_format"}
    for setting in fields(DatasetSpec):
        value = getattr(spec, setting.name)
        if setting.name not in always | _USED_BY[kind] and value not in (None, {}):
            raise DataError(
                f"dataset {spec.name}", None, setting.name,
                f"not used by {kind} datasets (they take {sorted(_USED_BY[kind])})",
            )


def load_problems(spec: DatasetSpec | str = DEFAULT_DATASET, **settings: Any) -> Problems:
    """Problems for a dataset spec, or for a name plus DatasetSpec fields as keywords."""
    if isinstance(spec, str):
        spec = DatasetSpec(name=spec)
    unknown = sorted(set(settings) - {setting.name for setting in fields(DatasetSpec)})
    if unknown:
        raise DataError(f"dataset {spec.name}", None, unknown[0], f"unknown setting; known: {[f.name for f in fields(DatasetSpec)]}")
    spec = replace(spec, **settings)
    kind = _kind(spec.name)
    _check_unused_settings(spec, kind)
    if spec.offset < 0:
        raise DataError(f"dataset {spec.name}", None, "offset", f"must be 0 or more, not {spec.offset}")
    problem = gold_format_problem(spec.gold_format)
    if problem:
        raise DataError(f"dataset {spec.name}", None, "gold_format", problem)
    problems = _load(spec, kind)
    end = None if spec.limit is None else spec.offset + spec.limit
    chosen = problems[spec.offset : end]
    if spec.gold_format != "auto":
        chosen = [replace(problem, gold_format=spec.gold_format) for problem in chosen]
    return Problems(chosen, problems.skipped)


def _load(spec: DatasetSpec, kind: str) -> Problems:
    if kind == "benchmark":
        return load_benchmark(spec.name, spec.path, spec.split, skip_bad=spec.skip_bad)
    if kind == "json":
        if spec.path is None:
            raise DataError("dataset json", None, "path", "missing: name the .json or .jsonl file")
        return load_json_file(spec.path, spec.fields, skip_bad=spec.skip_bad)
    if kind == "hub":
        return load_hub_dataset(spec.name[len(HUB_PREFIX) :], spec.split, spec.config, spec.fields, skip_bad=spec.skip_bad)
    preset = PRESETS.get(spec.name)
    task = (preset.name if preset else spec.name)[len(REASONING_GYM_PREFIX) :]
    options = {**(preset.options if preset else {}), **spec.options}
    size = spec.size if spec.size is not None else DEFAULT_GENERATED_SIZE
    return load_reasoning_gym(task, size, spec.seed or 0, options)
