"""Judge completions against gold answers in either answer format.

`text`: the completion states its answer (`\\boxed{}`, "The answer is", ...), found and
compared by `check_many`. `program`: the completion is a `def solution():` program (ReFT's
program-of-thought style), run in the sandbox; its return value is the answer.
"""

from __future__ import annotations

from typing import Literal, Sequence

from rftt.verify import check_many
from rftt.verify.outcome import Gold, Outcome
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
