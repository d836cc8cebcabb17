"""The verdict on a prediction (`Outcome`), gold answers and their formats, the options of a check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from rftt.verify.equivalence import DEFAULT_RELATIVE_TOLERANCE
from rftt.verify.extract import find_answer

REASONS = ("equal", "not_equal", "no_answer", "timeout", "error")
PIPELINE_LAST_NUMBER_FALLBACK = False
"""The default of evaluation, RL rewards and search alike: only answers a completion states count (a number
picked out of unfinished reasoning is not an answer the model gave); a recipe can switch the fallback on."""

GoldFormat = Literal["auto", "value", "latex"]
"""`value`: the whole gold is the answer ("18", "\\frac{1}{2}"); `latex`: LaTeX text or a worked solution
the answer is found in ("$10455$", "So the answer is \\[\\boxed{7}\\]"); `auto`: `latex` when the gold has
math delimiters, a box, GSM8K's `####` or an "answer is" phrase, else `value`."""
GOLD_FORMATS: tuple[str, ...] = get_args(GoldFormat)
_MATH_DELIMITERS = ("$", "\\[", "\\(")


@dataclass(frozen=True)
class Gold:
    """A gold answer with its format, for datasets that say how their golds are written."""

    text: str
    format: GoldFormat = "auto"

    def __post_init__(self) -> None:
        problem = gold_format_problem(self.format)
        if problem:
            raise ValueError(f"gold format {problem}")


def gold_format_problem(gold_format: object) -> str | None:
    """What is wrong with a gold format's name, for an error message; None when it is one of GOLD_FORMATS."""
    return None if gold_format in GOLD_FORMATS else f"{gold_format!r} is not one of {', '.join(GOLD_FORMATS)}"


class GoldReading(NamedTuple):
    """The answer a gold states, and whether the gold is a plain value (read whole) rather than LaTeX text."""

    answer: str
    whole: bool


def read_gold(gold: str, gold_format: GoldFormat = "auto") -> GoldReading:
    """A gold as its format says (`auto`: LaTeX text when it has math delimiters or states an answer the way a
    prediction would, in a box, after `####` or an "answer is" phrase; else a plain value)."""
    if gold_format == "value":
        return GoldReading(gold, True)
    found = find_answer(gold, last_number_fallback=False)
    if gold_format == "auto" and found is None and not any(mark in gold for mark in _MATH_DELIMITERS):
        return GoldReading(gold, True)
    return GoldReading(found.text if found else gold, False)


@dataclass(frozen=True)
class Outcome:
    """The verdict on one prediction: correct or not, the answer found in it, and why."""

    correct: bool
    extracted: str | None
    reason: str


@dataclass(frozen=True)
class CheckOptions:
    """How answers are found and compared."""

    last_number_fallback: bool = True
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE
    absolute_tolerance: float = 0.0


def as_text(value: object) -> str | None:
    """Any input as text (bytes decoded, numbers printed); None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


