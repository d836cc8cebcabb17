"""Judge completions against gold answers in either answer format.

`text`: the completion states its answer (`\\boxed{}`, "The answer is", ...), found and
compared by `check_many`. `program`: the completion is a `def solution():` program (ReFT's
program-of-thought style), run in the sandbox; its return value is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from rftt.config import ConfigError
from rftt.verify import check_many
from rftt.verify.outcome import PIPELINE_LAST_NUMBER_FALLBACK, Gold, Outcome
from rftt.verify.programs import check_programs
from rftt.verify.sandbox import ProgramExecutor
from rftt.workers import shared_at_exit

AnswerFormat = Literal["text", "program"]

default_executor = shared_at_exit(ProgramExecutor)
"""The shared sandbox pool for program answers, started on first use and stopped at exit."""


def judge(completions: Sequence[str], golds: Sequence[str | Gold], *, answer_format: AnswerFormat = "text",
          last_number_fallback: bool = True, absolute_tolerance: float = 0.0) -> list[Outcome]:
    """One Outcome per completion; for programs, `extracted` is the value the program returned."""
    if answer_format == "program":
        return check_programs(completions, golds, default_executor(), absolute_tolerance)[0]
    return check_many(completions, golds, last_number_fallback=last_number_fallback,
                      absolute_tolerance=absolute_tolerance)


@dataclass(frozen=True)
class AnswerCheckConfig:
    """How a stage finds and compares answers, the same settings in evaluation and RL. `format`: `text` (the
    completion states its answer) or `program` (a `def solution():` run in the sandbox); `last_number_fallback`:
    also read an answer the text does not state, its last number or expression (false counts only stated answers,
    so the extraction rate measures format); `absolute_tolerance`: numbers this close are equal (for golds rounded
    in the data, as SVAMP's)."""

    format: AnswerFormat = "text"
    last_number_fallback: bool = PIPELINE_LAST_NUMBER_FALLBACK
    absolute_tolerance: float = 0.0

    def judge(self, completions: Sequence[str], golds: Sequence[str | Gold]) -> list[Outcome]:
        """One Outcome per completion under these settings."""
        return judge(completions, golds, answer_format=self.format, last_number_fallback=self.last_number_fallback,
                     absolute_tolerance=self.absolute_tolerance)

    def check_for_tree_search(self, key: str) -> None:
        """Tree search writes functional-token steps and judges their answers exactly: refuse the settings it
        cannot honour, naming `key` (the group's place in the config)."""
        if self.format != "text":
            raise ConfigError(f"{key}.format: tree search writes functional-token steps, not programs")
        if self.absolute_tolerance:
            raise ConfigError(f"{key}.absolute_tolerance: tree search judges answers exactly (set it to 0)")
