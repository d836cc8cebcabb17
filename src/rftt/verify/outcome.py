"""The verdict on a prediction (`Outcome`), gold answers and their formats, the options of a check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from rftt.verify.equivalence import DEFAULT_RELATIVE_TOLERANCE
from rftt.verify.extract import extract_answer

REASONS = ("equal", "not_equal", "no_answer", "timeout", "error")
PIPELINE_LAST_NUMBER_FALLBACK = False
"""The default of evaluation, RL rewards and search alike: only answers a completion states count (a number
picked out of unfinished reasoning is not an answer the model gave); a recipe can switch the fallback on."""

GoldFormat = Literal["auto", "value", "latex"]
"""`value`: the whole gold is the answer ("18", "\\frac{1}{2}"); `latex`: LaTeX text or a worked solution
the answer is found in ("$10455$", "So the answer is \\[\\boxed{7}\\]"); `auto`: `latex` when the gold has
math delimiters, a box, GSM8K's `####` or an "answer is" phrase, else `value`."""
GOLD_FORMATS: tuple[str, ...] = get_args(GoldFormat)
_LATEX_TEXT_MARKERS = ("$", "\\boxed", "\\fbox", "\\[", "\\(", "####")
_ANSWER_WORDS = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)


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


def resolved_format(gold: str, gold_format: GoldFormat) -> GoldFormat:
    """`auto` decided for one gold: `latex` when it is marked-up text, else `value`."""
    if gold_format != "auto":
        return gold_format
    latex = any(marker in gold for marker in _LATEX_TEXT_MARKERS) or _ANSWER_WORDS.search(gold)
    return "latex" if latex else "value"


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


def gold_answer(gold: str, gold_format: GoldFormat = "auto") -> str:
    """The answer a gold states: the whole of a plain value, the answer found in LaTeX text (else all of it)."""
    if resolved_format(gold, gold_format) == "value":
        return gold
    return extract_answer(gold, last_number_fallback=False) or gold
