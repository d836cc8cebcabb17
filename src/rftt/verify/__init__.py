"""Answer verification: find the final answer in a prediction and decide if it equals the gold one.

`check` never raises and never hangs: option letters and plain numbers are judged at once,
every other comparison in worker processes under a wall-clock timeout (see `rftt.verify.pool`
and, for the order of the rules, `rftt.verify.judgement`)."""

from __future__ import annotations

from typing import Sequence

from rftt.verify.equivalence import DEFAULT_RELATIVE_TOLERANCE, answers_equal, parse_number
from rftt.verify.extract import extract_answer
from rftt.verify.outcome import GOLD_FORMATS, REASONS, CheckOptions, Gold, GoldFormat, Outcome
from rftt.verify.pool import DEFAULT_TIMEOUT_SECONDS, VerifierPool
from rftt.workers import shared_at_exit

default_pool = shared_at_exit(VerifierPool)
"""The shared pool behind `check` and `check_many`, started on first use and stopped at exit."""


def check(prediction_text: object, gold: object, *, last_number_fallback: bool = True,
          relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE, absolute_tolerance: float = 0.0) -> Outcome:
    """Whether a prediction's final answer equals `gold`: `Outcome(correct, extracted, reason)`.

    Numbers match within `relative_tolerance`, or within `absolute_tolerance` for datasets whose
    gold answers are loosely rounded (ReFT compares SVAMP within 1e-2).
    """
    return check_many([prediction_text], [gold], last_number_fallback=last_number_fallback,
                      relative_tolerance=relative_tolerance, absolute_tolerance=absolute_tolerance)[0]


def check_many(predictions: Sequence[object], golds: Sequence[object], *, last_number_fallback: bool = True,
               relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE, absolute_tolerance: float = 0.0) -> list[Outcome]:
    """`check` over many pairs at once, spread over the worker processes."""
    options = CheckOptions(last_number_fallback=last_number_fallback, relative_tolerance=relative_tolerance,
                           absolute_tolerance=absolute_tolerance)
    return default_pool().check_many(predictions, golds, options)


__all__ = [
    "DEFAULT_RELATIVE_TOLERANCE",
    "DEFAULT_TIMEOUT_SECONDS",
    "GOLD_FORMATS",
    "REASONS",
    "CheckOptions",
    "Gold",
    "GoldFormat",
    "Outcome",
    "VerifierPool",
    "answers_equal",
    "check",
    "check_many",
    "default_pool",
    "extract_answer",
    "parse_number",
]
