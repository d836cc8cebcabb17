"""Decide whether an extracted answer equals the gold answer.

In order: multiple-choice letters (when the gold is a letter a-e); numbers, read through
currency, digit groups (`1,234`, `1 000`, `10\\,000`), decimal commas (`1000,99`), units,
percent, fractions and scientific notation, whole numbers compared exactly and others with a
relative tolerance (a number pair's verdict is final; against a numeric gold, an answer with
arithmetic still to do, such as `2 + -1`, is not a final answer); plain text compared
case-insensitively; and last symbolic equivalence through math-verify (expressions,
intervals, tuples, sets). The symbolic step can be slow on pathological input: callers run
it under a timeout (see `rftt.verify.pool`). Every pattern here runs in linear time."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rftt.verify.extract import DIGIT_GROUPS
from rftt.verify.latex import symbolically_equal

DEFAULT_RELATIVE_TOLERANCE = 1e-6
_ABSOLUTE_TOLERANCE = 1e-12
_WHOLE_NUMBER_SLACK = 1e-12
"""How far (relative) a float may be from a whole number and still state it: a program's 2.9999999999999996 is 3."""
_PERCENT_SCALE = 100.0

_DELIMITERS = re.compile(r"^\$+|(?<!\$)\$+$|^\\[(\[]|\\[)\]]$")
_SPACING_COMMANDS = re.compile(r"\\left|\\right|\\[!,;: ]\s*")  # "11,\! 111" is 11,111
_TEXT_COMMAND = re.compile(r"\\(?:text|mbox|mathrm|textbf|textit)\s*\{([^{}]*)\}")
_CURRENCY = re.compile(r"\\\$|[$€£¥₹]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_PERCENT = re.compile(r"\\?%")
_TRAILING_WORDS = re.compile(r"(?<=[\d}])\s*[A-Za-z][A-Za-z .]*$")

_PLAIN = rf"[-+]?(?:{DIGIT_GROUPS}|\d+)(?:\.\d*)?|[-+]?\.\d+"
_PLAIN_NUMBER = re.compile(rf"^(?:{_PLAIN})$")
_SCIENTIFIC = re.compile(
    rf"^({_PLAIN})\s*(?:[eE]([-+]?\d+)|(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{{?\s*([-+]?\d+)\s*\}}?)$"
)
_SPACED_GROUPS = re.compile(r"^[-+]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^([-+]?(?:[1-9]\d{0,2}(?:\.\d{3})+|\d+)),(\d+)$")
_LATEX_FRACTION = re.compile(rf"^([-+])?\\frac\s*\{{\s*({_PLAIN})\s*\}}\s*\{{\s*({_PLAIN})\s*\}}$")
_SHORT_FRACTION = re.compile(r"^([-+])?\\frac(\d)(\d)$")
_SLASH_FRACTION = re.compile(rf"^({_PLAIN})\s*/\s*({_PLAIN})$")

_ARITHMETIC_LEFT = re.compile(r"[\w)}\]]\s*(?:[-+*/^×÷]|\\times|\\cdot|\\div)\s*(?:[-+]\s*)?[\w(\\{]")

_DANGLING_OPERATOR = re.compile(r"(?:[-+*/^=×÷(\[{_]|\\times|\\cdot|\\div|\\frac|\\sqrt)$")

_COMPARISON = re.compile(r"\\[lg]eq?|\\neq?|[<>!]|\\approx")

_CHOICE_GOLD = re.compile(r"^\(?\s*([a-e])(?:\s*\))?$", re.IGNORECASE)
_CHOICE_PREDICTIONS = (
    re.compile(r"^\(?\s*([a-e])(?:\s*\))?\.?$", re.IGNORECASE),
    re.compile(r"^(?:option|choice)\s*(?:\(\s*)?([a-e])(?:\s*\))?\.?$", re.IGNORECASE),
    re.compile(r"^\(\s*([a-e])\s*\)", re.IGNORECASE),
    re.compile(r"^([a-e])\s*\)", re.IGNORECASE),
)


@dataclass(frozen=True)
class Number:
    """A numeric answer and whether it was written as a percentage."""

    value: float
    percent: bool


def clean(text: str) -> str:
    """Strip math delimiters, sizing and spacing commands (so `10\\,000` is 10000), normalise minus signs,
    fractions, `{,}` digit separators and the empty set's spellings."""
    text = text.strip().replace("\u2212", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("{,}", ",").replace("\\varnothing", "\\emptyset")
    text = _SPACING_COMMANDS.sub("", _DELIMITERS.sub("", text)).strip()
    return text.rstrip(".").strip()


def _unwrap_text_commands(text: str) -> str:
    """`\\text{5 cm}` keeps its content when it holds digits; `5\\text{ cm}` loses the unit."""
    return _TEXT_COMMAND.sub(lambda match: match.group(1) if re.search(r"\d", match.group(1)) else "", text)


def parse_number(text: str) -> Number | None:
    """The number an answer states, read through units, currency, percent and notation; else None."""
    text = _unwrap_text_commands(clean(text))
    percent = bool(_PERCENT.search(text))
    text = _DEGREES.sub("", _CURRENCY.sub("", _PERCENT.sub("", text))).strip()
    text = _TRAILING_WORDS.sub("", text).strip()
    value = _numeric_value(text)
    return None if value is None or not math.isfinite(value) else Number(value, percent)


def _plain_value(text: str) -> float:
    return float(text.replace(",", ""))


def _numeric_value(text: str) -> float | None:
    if _PLAIN_NUMBER.match(text):
        return _plain_value(text)
    if _SPACED_GROUPS.match(text):
        return _plain_value(text.replace(" ", ""))
    match = _DECIMAL_COMMA.match(text)  # "1000,99", "0,111", "1.234,5": a comma not before one group of 3
    if match:
        return float(f"{match.group(1).replace('.', '')}.{match.group(2)}")
    match = _SCIENTIFIC.match(text)
    if match:
        exponent = int(match.group(2) or match.group(3))
        return _plain_value(match.group(1)) * 10.0**exponent if abs(exponent) < 300 else None
    match = _LATEX_FRACTION.match(text) or _SHORT_FRACTION.match(text)
    if match:
        return _ratio(match.group(2), match.group(3), negative=match.group(1) == "-")
    match = _SLASH_FRACTION.match(text)
    if match:
        return _ratio(match.group(1), match.group(2), negative=False)
    return None


def _ratio(numerator: str, denominator: str, *, negative: bool) -> float | None:
    bottom = _plain_value(denominator)
    if bottom == 0:
        return None
    value = _plain_value(numerator) / bottom
    return -value if negative else value


def numbers_equal(predicted: Number, gold: Number, relative_tolerance: float, absolute_tolerance: float = 0.0) -> bool:
    """Equal within tolerance (a whole number only to itself: 1450001 and 1450000.5 are not 1450000); a percent
    sign on either side also allows the value scaled by 100."""

    def close(a: float, b: float) -> bool:
        if a.is_integer() or b.is_integer():
            both_whole = a.is_integer() and b.is_integer()
            return abs(a - b) <= (0 if both_whole else _WHOLE_NUMBER_SLACK * max(1.0, abs(b)))
        return math.isclose(a, b, rel_tol=relative_tolerance, abs_tol=_ABSOLUTE_TOLERANCE)

    if close(predicted.value, gold.value) or abs(predicted.value - gold.value) <= absolute_tolerance:
        return True
    if predicted.percent and close(predicted.value / _PERCENT_SCALE, gold.value):
        return True
    return gold.percent and close(predicted.value, gold.value / _PERCENT_SCALE)


def choice_letter(text: str) -> str | None:
    """The option letter an answer picks ("(C)", "c )", "option c"), lower-cased; else None."""
    text = _TEXT_COMMAND.sub(lambda match: match.group(1), clean(text))
    for pattern in _CHOICE_PREDICTIONS:
        match = pattern.match(text)
        if match:
            return match.group(1).lower()
    return None


def is_choice_letter(gold: str) -> bool:
    """Whether a gold answer is a multiple-choice option letter (a-e)."""
    return _CHOICE_GOLD.match(clean(gold)) is not None


def has_arithmetic_left(text: str) -> bool:
    """Whether an answer still holds an operation between two operands (`2 + -1`, `3 \\times 4`, `2^3`)."""
    return _ARITHMETIC_LEFT.search(_unwrap_text_commands(clean(text))) is not None


def final_side(text: str) -> str:
    """The value an equation ends on (`x = \\frac{3}{2} = 1.5` gives `1.5`); other text unchanged."""
    if _COMPARISON.search(text):
        return text
    sides = text.rsplit("=", 1)
    return sides[-1].strip() if len(sides) == 2 and sides[-1].strip() else text


def is_unfinished(text: str) -> bool:
    """Whether an answer stops mid-expression: an operator with nothing after it, or a brace left open."""
    text = clean(text)
    return bool(_DANGLING_OPERATOR.search(text)) or text.count("{") != text.count("}")


def _plain_text(text: str) -> str:
    return " ".join(_unwrap_text_commands(clean(text)).lower().split())


def answers_equal(predicted: str, gold: str, *, relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
                  absolute_tolerance: float = 0.0, symbolic: bool = True) -> bool:
    """Whether an extracted answer states the gold answer (see the module docstring for the order);
    `symbolic=False` stops before math-verify, for a caller that asks it itself."""
    gold_choice = _CHOICE_GOLD.match(clean(gold))
    if gold_choice:
        return choice_letter(predicted) == gold_choice.group(1).lower()
    predicted_number, gold_number = parse_number(predicted), parse_number(gold)
    if predicted_number is not None and gold_number is not None:
        return numbers_equal(predicted_number, gold_number, relative_tolerance, absolute_tolerance)
    if gold_number is not None and has_arithmetic_left(predicted):
        return False
    if _plain_text(predicted) == _plain_text(gold):
        return True
    return symbolic and symbolically_equal(clean(predicted), clean(gold))
