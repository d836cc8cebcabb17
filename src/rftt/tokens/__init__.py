"""Functional tokens: the eight reasoning moves as vocabulary (or, for the ablation, as text tags), their
grammar, and trace parsing.

The vocabulary half needs torch and transformers; it is imported on first use, so that
the grammar and the text parser stay cheap to import (the verifier's workers use them).
"""

from __future__ import annotations

import importlib
from typing import Any

from rftt.tokens.moves import (
    LEGAL_NEXT_MOVES,
    MOVE_DESCRIPTIONS,
    TERMINAL_MOVES,
    Move,
    first_illegal_step,
    is_legal_trace,
    legal_next_moves,
    parse_move,
)
from rftt.tokens.steps import Step, StepSpan, moves_of, parse_steps, render_steps
from rftt.tokens.text_tags import TextTags

_VOCABULARY_NAMES = (
    "FUNCTIONAL_TOKENS_FILE",
    "FunctionalTokenError",
    "FunctionalTokens",
    "StepTags",
    "add_functional_tokens",
    "initialise_embeddings",
    "load_step_tags",
    "save_step_tags",
)


def __getattr__(name: str) -> Any:
    if name in _VOCABULARY_NAMES:
        return getattr(importlib.import_module("rftt.tokens.vocabulary"), name)
    raise AttributeError(f"module 'rftt.tokens' has no attribute {name!r}")


__all__ = [
    *_VOCABULARY_NAMES,
    "LEGAL_NEXT_MOVES",
    "MOVE_DESCRIPTIONS",
    "TERMINAL_MOVES",
    "TextTags",
    "Move",
    "Step",
    "StepSpan",
    "first_illegal_step",
    "is_legal_trace",
    "legal_next_moves",
    "moves_of",
    "parse_move",
    "parse_steps",
    "render_steps",
]
