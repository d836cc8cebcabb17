"""Reasoning traces as steps: render `(move, content)` steps to text and parse text or token ids back.

A step is written `<move>content</move>` and steps follow each other with nothing in
between. Parsing is forgiving, because it reads what a model wrote: a step left open at
the end, a step cut short by the next opening tag, or one closed by the wrong tag comes
back with `closed=False`; a stray closing tag and text outside any step are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, Iterable, Sequence, TypeVar

from rftt.tokens.moves import Move

Piece = TypeVar("Piece")

_TAG_PATTERN = re.compile("<(/?)(" + "|".join(re.escape(move.value) for move in Move) + ")>")


@dataclass(frozen=True)
class Step:
    """One reasoning step: a move and what was written inside it."""

    move: Move
    content: str
    closed: bool = True


@dataclass(frozen=True)
class StepSpan(Generic[Piece]):
    """Where a step lies in a sequence of pieces (characters' chunks or token ids).

    `open_index` is the position of the opening tag and `close_index` that of the closing
    tag (None when the step was never properly closed); `content` holds the pieces between.
    """

    move: Move
    content: tuple[Piece, ...]
    open_index: int
    close_index: int | None

    @property
    def closed(self) -> bool:
        return self.close_index is not None


@dataclass(frozen=True)
class Tag:
    """An opening or closing functional tag met while scanning a trace."""

    move: Move
    closing: bool


def render_steps(steps: Iterable[Step]) -> str:
    """The text of a trace: each step as `<move>content</move>`, an unclosed step without its closing tag."""
    return "".join(
        step.move.opening_tag + step.content + (step.move.closing_tag if step.closed else "") for step in steps
    )


def assemble_spans(pieces: Sequence[Tag | Piece]) -> list[StepSpan[Piece]]:
    """Group a scanned trace (tags and content pieces) into step spans; the one parser both forms share."""
    spans: list[StepSpan[Piece]] = []
    move: Move | None = None
    open_index = 0
    content: list[Piece] = []

    def finish(close_index: int | None) -> None:
        assert move is not None
        spans.append(StepSpan(move, tuple(content), open_index, close_index))

    for index, piece in enumerate(pieces):
        if not isinstance(piece, Tag):
            if move is not None:
                content.append(piece)
            continue
        if piece.closing:
            if move is not None:
                finish(index if piece.move == move else None)
                move = None
            continue
        if move is not None:
            finish(None)
        move, open_index, content = piece.move, index, []
    if move is not None:
        finish(None)
    return spans


def scan_text(text: str) -> list[Tag | str]:
    """Split text into functional tags and the plain text between them."""
    pieces: list[Tag | str] = []
    position = 0
    for match in _TAG_PATTERN.finditer(text):
        if match.start() > position:
            pieces.append(text[position : match.start()])
        pieces.append(Tag(Move(match.group(2)), closing=bool(match.group(1))))
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    return pieces


def parse_steps(text: str) -> list[Step]:
    """The steps of a trace written as text (see the module docstring for malformed traces)."""
    return [Step(span.move, "".join(span.content), span.closed) for span in assemble_spans(scan_text(text))]


def moves_of(steps: Iterable[Step]) -> list[Move]:
    """The sequence of moves of a trace."""
    return [step.move for step in steps]
