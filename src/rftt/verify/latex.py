"""Every call into math-verify: LaTeX, expressions, sets, intervals, several boxes, digit groups.

Runs inside the verifier's workers only: sympy can stall on a pathological expression, and the
pool bounds every comparison with a deadline (so math-verify's own signal-based timeouts are off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LatexVerdict:
    """math-verify's verdict and the answer it read in the prediction, as written there."""

    correct: bool
    extracted: str


def _parse(text: str, stated_only: bool) -> list[Any]:
    """math-verify's reading of `text`: [sympy object, string as written], or [] when it finds no answer."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(try_extract_without_anchor=not stated_only),
               ExprExtractionConfig(try_extract_without_anchor=not stated_only)]
    return parse(text, extraction_config=configs, parsing_timeout=None)


def parse_gold(gold: str, whole: bool) -> list[Any]:
    """A gold read by math-verify: `whole` as one expression; else as text to find its answer in (or, when
    none is marked, as one expression)."""
    as_value = f"${gold}$"
    for reading in (as_value,) if whole else (gold, as_value):
        parsed = _parse(reading, stated_only=False)
        if parsed:
            return parsed
    return []


def symbolically_equal(predicted: str, gold: str) -> bool:
    """math-verify's verdict on two answers, each read whole as one expression."""
    from math_verify import verify

    expected, answer = parse_gold(gold, whole=True), parse_gold(predicted, whole=True)
    return bool(expected and answer and verify(expected, answer, timeout_seconds=None))


def read_and_compare(text: str, gold: str, *, gold_whole: bool, stated_only: bool) -> LatexVerdict | None:
    """math-verify's own reading of a prediction text, compared with a gold; None when it finds no answer."""
    from math_verify import verify

    predicted, expected = _parse(text, stated_only), parse_gold(gold, gold_whole)
    if not predicted or not expected:
        return None
    return LatexVerdict(bool(verify(expected, predicted, timeout_seconds=None)), str(predicted[-1]))
