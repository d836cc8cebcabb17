"""The order in which a prediction is judged against a gold answer.

1. Multiple-choice golds (a letter a-e): the option the prediction picks, nothing else.
2. A stated answer (a step, a box, GSM8K's `####`, an "answer is" phrase) and a gold that are both
   plain numbers: compared as numbers, here in the caller, with no worker and no sympy (the fast
   path every arithmetic and GSM8K answer takes).
3. Otherwise, in a worker under a deadline. A stated answer is judged by rftt's rules
   (`rftt.verify.equivalence`, math-verify for expressions), an equation by the value it ends on;
   one left unfinished ("3 +", "\\frac{10}{") or with arithmetic still to do against a numeric gold
   is not a final answer. Nothing else in the text can overturn a stated answer, except several
   boxes that together are the answer (`\\boxed{1}, \\boxed{2}` for `{1, 2}`). An answer the text
   does not state (the fallback) is what math-verify reads in the text, else its last number.
"""

from __future__ import annotations

from dataclasses import dataclass

from rftt.verify.equivalence import (
    answers_equal,
    final_side,
    has_arithmetic_left,
    is_choice_letter,
    is_unfinished,
    numbers_equal,
    parse_number,
)
from rftt.verify.extract import BOXED_COMMANDS, FoundAnswer
from rftt.verify.latex import read_and_compare
from rftt.verify.outcome import CheckOptions

FAST_PATH_MAX_CHARS = 64
"""Longer answers go to a worker: number parsing is linear-time only up to a bounded length."""
_MARKUP = ("$", "\\")


@dataclass(frozen=True)
class Verdict:
    """Whether the prediction is correct and the answer it was judged by (None: it states none)."""

    correct: bool
    extracted: str | None


@dataclass(frozen=True)
class Comparison:
    """What a worker needs to judge one prediction: the text, the answer found in it, and the gold (as
    written, and the answer it states); `gold_whole`: the gold is a plain value, not text to search."""

    text: str
    found: FoundAnswer | None
    gold: str
    gold_answer: str
    gold_whole: bool
    options: CheckOptions


def quick_verdict(comparison: Comparison) -> Verdict | None:
    """The verdict when no worker is needed (rules 1-2, or no answer anywhere); else None."""
    found, gold = comparison.found, comparison.gold_answer
    if is_choice_letter(gold):
        return Verdict(found is not None and answers_equal(found.text, gold, symbolic=False),
                       found.text if found else None)
    if found is None:
        return None if any(mark in comparison.text for mark in _MARKUP) else Verdict(False, None)
    if found.stated and max(len(found.text), len(gold)) <= FAST_PATH_MAX_CHARS:
        predicted, expected = parse_number(found.text), parse_number(gold)
        if predicted is not None and expected is not None:
            options = comparison.options
            return Verdict(numbers_equal(predicted, expected, options.relative_tolerance, options.absolute_tolerance),
                           found.text)
    return None


def full_verdict(comparison: Comparison) -> Verdict:
    """Rule 3: a stated answer by rftt's rules (several boxes read together), else math-verify's reading."""
    found, gold = comparison.found, comparison.gold_answer
    numeric_gold = parse_number(gold) is not None
    if found is not None and found.stated:
        answer = _value(found.text, gold)
        if not_final(answer, numeric_gold):
            return Verdict(False, found.text)
        if _equal(answer, gold, comparison.options, symbolic=True):
            return Verdict(True, found.text)
        if not _several_boxes(found):
            return Verdict(False, found.text)
    latex = read_and_compare(found.region if found else comparison.text, comparison.gold,
                             gold_whole=comparison.gold_whole, stated_only=not comparison.options.last_number_fallback)
    if latex is not None:
        answer = _value(latex.extracted, gold)
        correct = not not_final(answer, numeric_gold) and (latex.correct or _equal(answer, gold, comparison.options))
        return Verdict(correct, latex.extracted if correct or found is None or not found.stated else found.text)
    if found is None or found.stated:
        return Verdict(False, found.text if found else None)
    return Verdict(_equal(found.text, gold, comparison.options, symbolic=True), found.text)


def not_final(answer: str, numeric_gold: bool) -> bool:
    """An answer left unfinished, or (against a number) one with arithmetic still to do (`2 + -1`, `(9+1)`):
    restating the question's expression must not earn the reward the result earns."""
    if is_unfinished(answer):
        return True
    return numeric_gold and parse_number(answer) is None and has_arithmetic_left(answer)


def _several_boxes(found: FoundAnswer) -> bool:
    """Whether a boxed answer is one of several boxes (which may together be the answer)."""
    return found.anchor == "boxed" and sum(found.region.count(command + "{") for command in BOXED_COMMANDS) > 1


def _value(answer: str, gold: str) -> str:
    """The value an answer states: the side an equation ends on, unless the gold is an equation itself."""
    return answer if "=" in gold else final_side(answer)


def _equal(answer: str, gold: str, options: CheckOptions, symbolic: bool = False) -> bool:
    """rftt's rules with this check's tolerances (math-verify's only when `symbolic`)."""
    return answers_equal(answer, gold, relative_tolerance=options.relative_tolerance,
                         absolute_tolerance=options.absolute_tolerance, symbolic=symbolic)
