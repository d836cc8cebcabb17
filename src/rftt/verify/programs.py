"""Program-of-thought answers: find the program in a completion, run it in the sandbox, check its value."""

from __future__ import annotations

import re
from typing import Sequence

from rftt.verify.outcome import Gold, Outcome
from rftt.verify.sandbox import ExecutionResult, ProgramExecutor

ENTRY = "solution"
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)
_DEFINITION = re.compile(rf"^def {ENTRY}\s*\(", re.MULTILINE)


def extract_program(text: str) -> str | None:
    """The `def solution():` program in a completion (inside a code fence if there is one), or None.
    Prose written after the program is cut off at the first line that is not Python."""
    fenced = [block for block in _FENCE.findall(text) if _DEFINITION.search(block)]
    source = fenced[-1] if fenced else text
    match = _DEFINITION.search(source)
    return _without_trailing_prose(source[match.start():].rstrip()) if match else None


def _without_trailing_prose(program: str) -> str:
    """`program` up to the line before its first syntax error, when that still leaves the definition
    (compiled only, never run); the whole program otherwise, for the sandbox to report its error."""
    lines = program.splitlines()
    while True:
        try:
            compile("\n".join(lines), "<program>", "exec", dont_inherit=True)
            return "\n".join(lines).rstrip()
        except SyntaxError as error:
            keep = (error.lineno or 1) - 1
            if keep < 2 or keep >= len(lines):
                return program
            lines = lines[:keep]
        except (ValueError, RecursionError, MemoryError):
            return program


def returned_answers(executions: Sequence[ExecutionResult | None]) -> list[str]:
    """Each run's return value as a boxed answer for the checker ("" when the program did not return one)."""
    return [f"\\boxed{{{result.value}}}" if result is not None and result.ok and result.value is not None else ""
            for result in executions]


def check_programs(completions: Sequence[str], golds: Sequence[str | Gold], executor: ProgramExecutor,
                   absolute_tolerance: float = 0.0) -> tuple[list[Outcome], list[ExecutionResult | None]]:
    """Run each completion's program and compare its return value with the gold answer (numbers within
    `absolute_tolerance` when the dataset's gold answers are rounded, as SVAMP's)."""
    from rftt.verify import check_many

    programs = [extract_program(text) for text in completions]
    runnable = [index for index, program in enumerate(programs) if program is not None]
    executions: list[ExecutionResult | None] = [None] * len(programs)
    for index, result in zip(runnable, executor.run_many([programs[index] for index in runnable])):
        executions[index] = result
    values = returned_answers(executions)
    outcomes = check_many(values, golds, last_number_fallback=False, absolute_tolerance=absolute_tolerance)
    return outcomes, executions
