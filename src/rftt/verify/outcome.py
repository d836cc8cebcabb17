"""The verdict on a prediction (`Outcome`), the options of a check, and the steps around the comparison."""

from __future__ import annotations

from dataclasses import dataclass

from rftt.verify.equivalence import DEFAULT_RELATIVE_TOLERANCE
from rftt.verify.extract import extract_answer

REASONS = ("equal", "not_equal", "no_answer", "timeout", "error")


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


def gold_answer(gold: str) -> str:
    """The answer inside a gold string that is itself a worked solution (`\\boxed{}` or `#### N`)."""
    if "\\boxed" in gold or "####" in gold:
        return extract_answer(gold, last_number_fallback=False) or gold
    return gold


def outcome_before_comparison(extracted: str | None, gold: str | None) -> Outcome | None:
    """The verdict when no comparison is needed (no answer found, or no gold); else None."""
    if extracted is None:
        return Outcome(False, None, "no_answer")
    if gold is None or not gold.strip():
        return Outcome(False, extracted, "error")
    return None


def outcome_of_comparison(extracted: str, equal: bool | None) -> Outcome:
    """The verdict from a comparison's result (None: the comparison itself failed)."""
    if equal is None:
        return Outcome(False, extracted, "error")
    return Outcome(equal, extracted, "equal" if equal else "not_equal")
