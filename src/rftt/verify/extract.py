"""Find the final answer in a model's output, in a fixed order of precedence.

1. the last `<output>` step (inside it: the last `\\boxed{}`, else an "answer is" phrase,
   else the whole step);
2. the last `\\boxed{}` or `\\fbox{}`, nested braces matched;
3. GSM8K's `#### N`;
4. the last "the answer is X" / "final answer: X" phrase (X in angle brackets too, as ReFT's data writes it);
5. for multiple-choice questions only, the last option marker ("(C)", "option c", a lone letter);
6. the last number in the text (can be switched off); a number written after letters ("AZYUK2A",
   "H2O", "x2") is part of a word, not an answer.

`find_answer` also says which of these found the answer (its `anchor`): an answer the text
marks as one is judged differently from a last number picked out of it (see `rftt.verify.judgement`).
Every pattern here runs in linear time, so a huge or adversarial text cannot stall it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

from rftt.tokens.moves import Move
from rftt.tokens.steps import parse_steps

BOXED_COMMANDS = ("\\boxed", "\\fbox")
_GSM8K_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_PHRASE = re.compile(r"answer[ \t]*(?:is[ \t]*:?|:)[ \t]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_CLAUSE_AFTER_ANSWER = re.compile(
    r",\s+(?:and|but|though|although|which|so|since|because|as|where|while|that|i\.e\.)\b|\s+\((?=[A-Za-z]{2,}\b)")
_CHOICE_MARKER = re.compile(r"\(\s*([a-e])\s*\)|\b(?:option|choice)\s+(?:is\s+)?\(?([a-e])\b|^\s*([a-e])(?:\s*\))?\s*$",
                            re.IGNORECASE)
DIGIT_GROUPS = r"[1-9]\d{0,2}(?:,\d{3})+"
"""Thousands written with commas (`1,234`; a group never starts a number with 0: `0,111` is a decimal comma)."""
_NUMBER = re.compile(rf"(?<![A-Za-z\d])(?<![A-Za-z]-)(?:[-\u2212]?(?:{DIGIT_GROUPS}|\d+)(?:\.\d+)?|[-\u2212]?\.\d+)")

Anchor = Literal["output", "boxed", "gsm8k", "phrase", "choice", "last_number"]


@dataclass(frozen=True)
class FoundAnswer:
    """An answer found in a text, and what marked it: a step, a box, a phrase, or only its position."""

    text: str
    anchor: Anchor
    region: str

    @property
    def stated(self) -> bool:
        """Whether the text marks this as its answer (anything but a last number picked out of it)."""
        return self.anchor != "last_number"


def find_answer(text: str, *, last_number_fallback: bool = True, multiple_choice: bool = False) -> FoundAnswer | None:
    """The final answer written in `text` with its anchor and the region it was read from; None when none."""
    if not text:
        return None
    output_step = _last_output_step(text)
    if output_step is not None:
        answer = last_boxed(output_step) or _answer_phrase(output_step) or output_step.strip()
        return FoundAnswer(answer, "output", output_step) if answer else None
    finders: tuple[tuple[Anchor, Callable[[str], str | None]], ...] = (
        ("boxed", last_boxed), ("gsm8k", _gsm8k_answer), ("phrase", _answer_phrase))
    for anchor, finder in finders:
        answer = finder(text)
        if answer:
            return FoundAnswer(answer, anchor, text)
    choice = _last_choice(text) if multiple_choice else None
    if choice:
        return FoundAnswer(choice, "choice", text)
    number = _last_number(text) if last_number_fallback else None
    return FoundAnswer(number, "last_number", text) if number else None


def extract_answer(text: str, *, last_number_fallback: bool = True, multiple_choice: bool = False) -> str | None:
    """The final answer written in `text`, or None when there is none."""
    found = find_answer(text, last_number_fallback=last_number_fallback, multiple_choice=multiple_choice)
    return found.text if found else None


def _last_output_step(text: str) -> str | None:
    if Move.OUTPUT.opening_tag not in text:
        return None
    outputs = [step.content for step in parse_steps(text) if step.move is Move.OUTPUT]
    return outputs[-1] if outputs else None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched; None if unclosed."""
    start = max(text.rfind(command + "{") for command in BOXED_COMMANDS)
    if start < 0:
        return None
    position = text.index("{", start)
    depth = 0
    for index in range(position, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[position + 1 : index].strip() or None
    return None


def _gsm8k_answer(text: str) -> str | None:
    matches = _GSM8K_ANSWER.findall(text)
    return matches[-1].strip() or None if matches else None


def _answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "answer:", to the end of its line, sentence or clause ("-1, and the
    sum of the others is 6"; "24 hours (that is, a day)")."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    for end in (_SENTENCE_END, _CLAUSE_AFTER_ANSWER):
        found_end = end.search(rest)
        if found_end:
            rest = rest[: found_end.start()]
    answer = rest.strip().rstrip(".").strip().strip("$").strip()
    if len(answer) > 2 and answer[0] == "<" and answer[-1] == ">":  # ReFT's SVAMP and MathQA: "the answer is <203>."
        answer = answer[1:-1].strip()
    return answer or None


def _last_choice(text: str) -> str | None:
    matches = list(_CHOICE_MARKER.finditer(text))
    return next(group for group in matches[-1].groups() if group) if matches else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None
