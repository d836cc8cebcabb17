"""SFT examples: (prompt, response) pairs from an `rftt search` SFT file, a dataset's gold solutions or the
correct samples of an `rftt eval --method maj@k` run (rejection sampling), tokenized with the loss on the
response only, optionally packed several to a row.

Styles: `functional` (search records: steps in functional tokens), `cot` (ReFT: the gold
chain of thought ending "Therefore, the answer is: X"), `program` (ReFT: the gold
`def solution():` program), `sampled` (a model's own correct samples, as written; one that states no
boxed answer gets ` \\boxed{answer}` appended, so the format it learns is the one it is scored on).
A record without a response, a step with an unknown functional token, or an over-long example is
named (file, line, field) and, as configured, fails the run or is skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch

from rftt.config import ConfigError
from rftt.data import DataError, DatasetSpec, load_problems
from rftt.data.files import read_rows
from rftt.data.records import Row
from rftt.prompts import get_template
from rftt.tokens import Move, Step, render_steps
from rftt.verify.extract import last_boxed

IGNORE_INDEX = -100
REFT_ANSWER_SUFFIX = "Therefore, the answer is: {answer}"
DEFAULT_TEMPLATES = {"functional": "functional", "cot": "reft", "program": "reft", "sampled": "chat_steps"}


@dataclass(frozen=True)
class SFTDataConfig:
    """Where SFT examples come from and how they become token sequences."""

    source: Literal["search", "dataset", "samples"] = "search"
    path: str | None = None
    dataset: DatasetSpec | None = None
    style: Literal["functional", "cot", "program", "sampled"] = "functional"
    samples_per_problem: int = 2
    template: str | None = None
    kinds: tuple[str, ...] = ("correct", "reflection")
    max_length: int = 1024
    overlong: Literal["truncate", "drop"] = "drop"
    packing: bool = False
    skip_bad: bool = False
    dev_fraction: float = 0.05
    dev_max: int = 200

    def __post_init__(self) -> None:
        if (self.source == "samples") != (self.style == "sampled"):
            raise ConfigError("config.data.style: samples (source: samples) are learned as written: "
                              "use source: samples with style: sampled, and style: sampled only with them")
        if self.samples_per_problem < 1:
            raise ConfigError("config.data.samples_per_problem: must be at least 1")

    def template_name(self) -> str:
        return self.template or DEFAULT_TEMPLATES[self.style]


@dataclass(frozen=True)
class SFTExample:
    """A question and the response to learn; `group` is its problem (kept on one side of the dev split)."""

    id: str
    question: str
    response: str
    group: str


@dataclass
class DataReport:
    """What happened to the records on their way to training, for the log."""

    examples: int = 0
    skipped: list[str] = field(default_factory=list)
    truncated: int = 0
    dropped_overlong: int = 0


def _search_examples(row: Row, kinds: Sequence[str]) -> list[SFTExample]:
    """A search record's path as an example, or none when its kind is not wanted."""
    kind = row.optional_text("kind") or "correct"
    if kind not in kinds:
        return []
    question = row.text("question")
    steps = row.data.get("steps") if isinstance(row.data, dict) else None
    if not isinstance(steps, list) or not steps:
        raise row.error("steps", "missing or empty: the record has no response")
    parsed = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("content"), str):
            raise row.error(f"steps[{index}]", "expected {move, content}")
        try:
            move = Move(step.get("move"))
        except ValueError:
            valid = ", ".join(move.value for move in Move)
            raise row.error(f"steps[{index}].move", f"unknown functional token {step.get('move')!r}; "
                                                    f"valid moves: {valid}") from None
        parsed.append(Step(move, step["content"]))
    identifier = row.optional_text("id") or f"line-{row.line}"
    return [SFTExample(identifier, question, render_steps(parsed), row.optional_text("problem_id") or identifier)]


def _gold_response(solution: str, answer: str, style: str) -> str:
    if style == "program" or "the answer is" in solution.strip().splitlines()[-1].lower():
        return solution.strip()
    return f"{solution.strip()}\n{REFT_ANSWER_SUFFIX.format(answer=answer)}"


def _sampled_examples(row: Row, limit: int) -> list[SFTExample]:
    """An `rftt eval` record's distinct correct samples (at most `limit`), a box appended where none holds an
    answer (a sample judged right by its last number may still carry an empty `\\boxed{}`)."""
    question, gold = row.text("question"), row.text("gold")
    completions, correct = row.data.get("completions"), row.data.get("sample_correct")
    if not isinstance(completions, list) or not isinstance(correct, list) or len(completions) != len(correct):
        raise row.error("completions", "expected the lists `completions` and `sample_correct` of equal length "
                                       "(an `rftt eval` problems.jsonl)")
    responses: list[str] = []
    for text, right in zip(completions, correct):
        response = text if (last_boxed(text) or "").strip() else f"{text.rstrip()} \\boxed{{{gold}}}"
        if right and response not in responses and len(responses) < limit:
            responses.append(response)
    identifier = row.text("id")
    return [SFTExample(f"{identifier}#{index}", question, response, identifier)
            for index, response in enumerate(responses)]


def _file_examples(config: SFTDataConfig, report: DataReport,
                   examples_of: Callable[[Row], Sequence[SFTExample]]) -> list[SFTExample]:
    """Examples from each record of `config.path`; a bad record raises, or with `skip_bad` is counted."""
    examples: list[SFTExample] = []
    for item in read_rows(config.path):
        try:
            if isinstance(item, DataError):
                raise item
            examples.extend(examples_of(item))
        except DataError as error:
            if not config.skip_bad:
                raise
            report.skipped.append(str(error))
    return examples


def load_examples(config: SFTDataConfig, report: DataReport) -> list[SFTExample]:
    """All usable examples; bad records raise (or, with `skip_bad`, are counted in `report`)."""
    examples: list[SFTExample] = []
    if config.source in ("search", "samples") and config.path is None:
        wanted = "an `rftt search` sft.jsonl file" if config.source == "search" else "an `rftt eval` problems.jsonl"
        raise DataError("sft data", None, "data.path", f"missing: name {wanted}")
    if config.source == "search":
        examples = _file_examples(config, report, lambda row: _search_examples(row, config.kinds))
    elif config.source == "samples":
        examples = _file_examples(config, report, lambda row: _sampled_examples(row, config.samples_per_problem))
    else:
        if config.dataset is None:
            raise DataError("sft data", None, "data.dataset", "missing: name a dataset with gold solutions")
        problems = load_problems(config.dataset)
        report.skipped.extend(str(error) for error in problems.skipped)
        for problem in problems:
            if not problem.solution:
                error = DataError(f"dataset {config.dataset.name}", None, "solution",
                                  f"problem {problem.id} has no gold solution (no response to learn)")
                if not config.skip_bad:
                    raise error
                report.skipped.append(str(error))
                continue
            examples.append(SFTExample(problem.id, problem.question,
                                       _gold_response(problem.solution, problem.answer, config.style), problem.id))
    report.examples = len(examples)
    return examples


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]


def tokenize(examples: Sequence[SFTExample], tokenizer: Any, config: SFTDataConfig, report: DataReport,
             encode_response: Callable[[str], list[int]] | None = None) -> list[TokenizedExample]:
    """Prompt (masked) + response + end-of-sequence token; over-long examples truncated or dropped.
    `encode_response` encodes a response (text step tags are encoded tag by tag); default: the tokenizer."""
    template = get_template(config.template_name())
    encode = encode_response or (lambda text: tokenizer.encode(text, add_special_tokens=False))
    tokenized = []
    for example in examples:
        prompt = tokenizer.encode(template.render(example.question, tokenizer), add_special_tokens=False)
        response = encode(example.response) + [tokenizer.eos_token_id]
        if len(prompt) + len(response) > config.max_length:
            if config.overlong == "drop" or len(prompt) >= config.max_length:
                report.dropped_overlong += 1
                continue
            report.truncated += 1
            response = response[: config.max_length - len(prompt)]
        tokenized.append(TokenizedExample(prompt + response, [IGNORE_INDEX] * len(prompt) + response))
    return tokenized


def pack(examples: Sequence[TokenizedExample], max_length: int) -> list[list[TokenizedExample]]:
    """Examples grouped, in order, into rows of at most `max_length` tokens (first fit)."""
    rows: list[list[TokenizedExample]] = []
    lengths: list[int] = []
    for example in examples:
        for index, length in enumerate(lengths):
            if length + len(example.input_ids) <= max_length:
                rows[index].append(example)
                lengths[index] += len(example.input_ids)
                break
        else:
            rows.append([example])
            lengths.append(len(example.input_ids))
    return rows


@dataclass
class SFTCollator:
    """Right-pads rows; a packed row gets restarting positions and a block-diagonal causal mask."""

    pad_id: int

    def __call__(self, rows: Sequence[Sequence[TokenizedExample] | TokenizedExample]) -> dict[str, torch.Tensor]:
        groups = [row if isinstance(row, (list, tuple)) else [row] for row in rows]
        width = max(sum(len(example.input_ids) for example in group) for group in groups)
        input_ids = torch.full((len(groups), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(groups), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(groups), width), dtype=torch.long)
        mask = torch.zeros((len(groups), 1, width, width), dtype=torch.bool)
        for row, group in enumerate(groups):
            start = 0
            for example in group:
                end = start + len(example.input_ids)
                input_ids[row, start:end] = torch.tensor(example.input_ids)
                labels[row, start:end] = torch.tensor(example.labels)
                positions[row, start:end] = torch.arange(end - start)
                mask[row, 0, start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
                start = end
            mask[row, 0, start:, start:] = torch.eye(width - start, dtype=torch.bool)
        if all(len(group) == 1 for group in groups):
            return {"input_ids": input_ids, "labels": labels, "attention_mask": _filled(groups, width).long()}
        return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "position_ids": positions}


def _filled(groups: Sequence[Sequence[TokenizedExample]], width: int) -> torch.Tensor:
    """1 over each row's real tokens (prompt and response), 0 over its padding."""
    lengths = torch.tensor([sum(len(example.input_ids) for example in group) for group in groups])
    return torch.arange(width)[None, :] < lengths[:, None]
