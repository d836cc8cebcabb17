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
    """The winning answer, its votes, and whether it is correct (None when no sample had an answer)."""

    answer: str | None
    votes: int
    correct: bool


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> Vote:
    """The most frequent answer among samples (ties go to the answer seen first); None answers do not vote."""
    groups: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        if answer is not None:
            groups.setdefault(answer_key(answer), []).append(index)
    if not groups:
        return Vote(None, 0, False)
    winner = max(groups.values(), key=len)
    return Vote(answers[winner[0]], len(winner), bool(correct[winner[0]]))
