"""Answers read the way math-verify reads them: LaTeX, expressions, sets, intervals, several boxes, digit groups.

Runs inside the verifier's workers only: sympy can stall on a pathological expression, and the
pool bounds every comparison with a deadline (so math-verify's own signal-based timeouts are off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rftt.verify.outcome import GoldFormat


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


def parse_gold(gold: str, gold_format: GoldFormat) -> list[Any]:
    """A gold read by math-verify: a plain value whole, as one expression; LaTeX text as an answer to find in it
    (or, when none is marked, as one expression)."""
    as_value = f"${gold}$"
    readings = (as_value,) if gold_format == "value" else (gold, as_value)
    for reading in readings:
        parsed = _parse(reading, stated_only=False)
        if parsed:
            return parsed
    return []


def latex_verdict(prediction: str, gold: str, gold_format: GoldFormat, *, stated_only: bool) -> LatexVerdict | None:
    """math-verify's verdict on a prediction text against a gold; None when it finds no answer in either."""
    from math_verify import verify

    predicted = _parse(prediction, stated_only)
    expected = parse_gold(gold, gold_format)
    if not predicted or not expected:
        return None
    extracted = str(predicted[-1])
    return LatexVerdict(bool(verify(expected, predicted, timeout_seconds=None)), extracted)
