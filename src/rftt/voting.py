"""Majority voting over sampled answers, with equivalent answers ("0.5", "1/2") counted together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rftt.verify.equivalence import clean, parse_number

_NUMBER_KEY_DIGITS = 9


def answer_key(answer: str) -> str:
    """A key equal for answers that state the same number (to 9 significant digits) or the same text."""
    number = parse_number(answer)
    if number is not None and not number.percent:
        return f"number:{number.value:.{_NUMBER_KEY_DIGITS}g}"
    return "text:" + " ".join(clean(answer).lower().split())


@dataclass(frozen=True)
class Vote:
    """The winning answer, its votes (or total weight), and whether it is correct (None: no sample answered)."""

    answer: str | None
    votes: float
    correct: bool


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float], correct: Sequence[bool]) -> Vote:
    """The answer with the largest total weight (ties go to the answer seen first); None answers do not vote."""
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, (answer, weight) in enumerate(zip(answers, weights)):
        if answer is not None:
            key = answer_key(answer)
            totals[key] = totals.get(key, 0.0) + weight
            first.setdefault(key, index)
    if not totals:
        return Vote(None, 0, False)
    winner = max(totals, key=lambda key: totals[key])
    return Vote(answers[first[winner]], totals[winner], bool(correct[first[winner]]))


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> Vote:
    """The most frequent answer among samples (ties go to the answer seen first); None answers do not vote."""
    return weighted_vote(answers, [1.0] * len(answers), correct)
