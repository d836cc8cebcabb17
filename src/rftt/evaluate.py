"""`rftt eval`: model x dataset x method -> one JSON line per problem, a summary, a printed table.

Methods: `greedy`, and `maj@k` (k samples, majority vote over equivalent answers). The
per-problem file is appended batch by batch and flushed, so a killed run resumes where it
stopped: finished problems are skipped and a half-written last line is dropped. The
summary is always computed from the whole file.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from rftt.config import ConfigError, to_dict
from rftt.data import DatasetSpec, Problem, load_problems
from rftt.engine.base import Engine
from rftt.engine.factory import EngineConfig, build_engine
from rftt.engine.types import SamplingParams
from rftt.prompts import get_template
from rftt.stats import wilson_interval
from rftt.verify import check_many
from rftt.voting import majority_vote

PROBLEMS_FILE = "problems.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
_METHOD = re.compile(r"^(greedy|maj@(\d+))$")
_SETTINGS_THAT_MAY_CHANGE_ON_RESUME = frozenset({"engine", "batch_size", "output_dir"})


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. `output_dir` holds its files; re-running the same config resumes it."""

    model: str = "smollm2-135m-instruct"
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    method: str = "greedy"
    template: str = "chat"
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    dtype: str = "auto"
    output_dir: str = "runs/eval"
    engine: EngineConfig = field(default_factory=EngineConfig)

    def samples(self) -> int:
        """k of `maj@k` (1 for greedy)."""
        match = _METHOD.match(self.method)
        if not match:
            raise ConfigError(f"config.method: {self.method!r} is not 'greedy' or 'maj@k' (for example maj@8)")
        return int(match.group(2) or 1)

    def sampling_params(self) -> SamplingParams:
        k = self.samples()
        return SamplingParams(n=k, temperature=0.0 if self.method == "greedy" else self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)


def _read_finished(path: Path) -> list[dict[str, Any]]:
    """Records already written; a last line cut short by a crash is dropped from the file."""
    if not path.exists():
        return []
    records, kept_bytes = [], 0
    with path.open("rb") as file:
        for line in file:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            kept_bytes += len(line)
    if kept_bytes != path.stat().st_size:
        with path.open("r+b") as file:
            file.truncate(kept_bytes)
    return records


def _check_same_run(output: Path, config: EvalConfig) -> None:
    """Refuse to resume into a folder written by a different configuration."""
    path = output / CONFIG_FILE
    settings = to_dict(config)
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(key for key in settings
                         if key not in _SETTINGS_THAT_MAY_CHANGE_ON_RESUME and previous.get(key) != settings[key])
        if changed:
            raise ConfigError(
                f"{output} holds a run with different settings ({', '.join(changed)}); "
                "choose another output_dir or delete it"
            )
    path.write_text(json.dumps(settings, indent=2) + "\n")


def _problem_record(problem: Problem, prompt: str, completions: list, outcomes: list, seconds: float) -> dict:
    vote = majority_vote([outcome.extracted for outcome in outcomes], [outcome.correct for outcome in outcomes])
    return {
        "id": problem.id,
        "prompt": prompt,
        "gold": problem.answer,
        "completions": [completion.text for completion in completions],
        "finish_reasons": [completion.finish_reason for completion in completions],
        "completion_tokens": [len(completion.token_ids) for completion in completions],
        "extracted": [outcome.extracted for outcome in outcomes],
        "sample_correct": [outcome.correct for outcome in outcomes],
        "answer": vote.answer,
        "votes": vote.votes,
        "correct": vote.correct,
        "generation_seconds": seconds,
    }


def summarise(records: Sequence[dict[str, Any]], config: EvalConfig) -> dict[str, Any]:
    """Accuracy with its 95% interval, extraction rate, lengths and speed over all records."""
    total = len(records)
    correct = sum(record["correct"] for record in records)
    extracted = sum(record["answer"] is not None for record in records)
    samples = [flag for record in records for flag in record["sample_correct"]]
    tokens = sum(sum(record["completion_tokens"]) for record in records)
    seconds = sum(record["generation_seconds"] for record in records)
    low, high = wilson_interval(correct, total)
    return {
        "model": config.model, "dataset": config.dataset.name, "method": config.method, "template": config.template,
        "problems": total,
        "accuracy": correct / total if total else 0.0,
        "accuracy_95_interval": [low, high],
        "extraction_rate": extracted / total if total else 0.0,
        "accuracy_among_extracted": correct / extracted if extracted else 0.0,
        "sample_accuracy": sum(samples) / len(samples) if samples else 0.0,
        "pass_at_k": sum(any(record["sample_correct"]) for record in records) / total if total else 0.0,
        "mean_completion_tokens": tokens / len(samples) if samples else 0.0,
        "truncated_fraction": (sum(reason == "length" for record in records for reason in record["finish_reasons"])
                               / len(samples) if samples else 0.0),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "generation_seconds": seconds,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small table."""
    low, high = summary["accuracy_95_interval"]
    rows = [
        ("model", summary["model"]), ("dataset", summary["dataset"]), ("method", summary["method"]),
        ("template", summary["template"]), ("problems", summary["problems"]),
        ("accuracy", f"{summary['accuracy']:.1%} (95% interval {low:.1%}-{high:.1%})"),
        ("answers extracted", f"{summary['extraction_rate']:.1%}"),
        ("accuracy among extracted", f"{summary['accuracy_among_extracted']:.1%}"),
        ("per-sample accuracy", f"{summary['sample_accuracy']:.1%}"),
        ("pass@k", f"{summary['pass_at_k']:.1%}"),
        ("mean completion tokens", f"{summary['mean_completion_tokens']:.1f}"),
        ("hit the length limit", f"{summary['truncated_fraction']:.1%}"),
        ("generation tokens/s", f"{summary['tokens_per_second']:.1f}"),
    ]
    return "\n".join(f"{name:<26}{value}" for name, value in rows)


def evaluate(config: EvalConfig, *, engine: Engine | None = None, tokenizer: Any = None,
             problems: Sequence[Problem] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an evaluation and return its summary; files go to `config.output_dir`."""
    params = config.sampling_params()
    template = get_template(config.template)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    _check_same_run(output, config)
    problems = list(problems if problems is not None else load_problems(config.dataset))
    records_path = output / PROBLEMS_FILE
    finished = _read_finished(records_path)
    done_ids = {record["id"] for record in finished}
    todo = [problem for problem in problems if problem.id not in done_ids]
    if todo and engine is None:
        engine, tokenizer = build_engine(config.engine, config.model, config.dtype)
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="eval", unit="problem", disable=not progress)
    with records_path.open("a") as file:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            prompts = [template.render(problem.question, tokenizer) for problem in batch]
            started = time.perf_counter()
            results = engine.generate(prompts, params)
            seconds = (time.perf_counter() - started) / len(batch)
            texts = [completion.text for samples in results for completion in samples]
            golds = [problem.answer for problem in batch for _ in range(params.n)]
            outcomes = check_many(texts, golds)
            for index, (problem, prompt, samples) in enumerate(zip(batch, prompts, results)):
                record = _problem_record(problem, prompt, samples, outcomes[index * params.n : (index + 1) * params.n],
                                         seconds)
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
                finished.append(record)
            file.flush()
            os.fsync(file.fileno())
            bar.update(len(batch))
    bar.close()
    wanted = {problem.id for problem in problems}
    summary = summarise([record for record in finished if record["id"] in wanted], config)
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
