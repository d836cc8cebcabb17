"""Step tags written as plain text: the `--no-functional-tokens` ablation.

The trace is the same text as with functional tokens (`<next_step>...</next_step>`), but
no tag is added to the vocabulary: each tag is the several ordinary tokens the tokenizer
makes of it. Every place that reads or writes a trace as token ids uses each tag's own
encoding and encodes the text between tags on its own (`encode_trace`), because the
tokenizer would otherwise merge a tag's first or last characters with its neighbours
(`.</`, `><`). So supervised targets, tree nodes and RL trajectories agree token for token.

`TextTags` offers the same methods as `FunctionalTokens`; callers use either through them.
Measured with byte-level BPE (SmolLM2, GPT-2 style); a SentencePiece tokenizer that adds a
word-start marker to every piece encoded alone would put a space before each piece.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from rftt.tokens.moves import Move
from rftt.tokens.steps import StepSpan, Tag, assemble_spans, scan_text

if TYPE_CHECKING:
    from rftt.engine.types import Completion

NextTokenLogprobs = Callable[[list[list[int]], list[int]], list[list[float]]]
"""An engine's `next_token_logprobs`: for each prefix, the log-probability of each candidate as the next token."""


@dataclass(frozen=True)
class TextTags:
    """The token ids each tag is written with when tags are ordinary text."""

    openings: dict[Move, tuple[int, ...]]
    closings: dict[Move, tuple[int, ...]]
    kind = "text"

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, moves: Iterable[Move] = tuple(Move)) -> "TextTags":
        moves = tuple(moves)
        return cls(
            openings={move: tuple(tokenizer.encode(move.opening_tag, add_special_tokens=False)) for move in moves},
            closings={move: tuple(tokenizer.encode(move.closing_tag, add_special_tokens=False)) for move in moves},
        )

    @property
    def moves(self) -> tuple[Move, ...]:
        return tuple(self.openings)

    def opening(self, move: Move) -> list[int]:
        return list(self.openings[move])

    def closing(self, move: Move) -> list[int]:
        return list(self.closings[move])

    @cached_property
    def tag_texts(self) -> tuple[str, ...]:
        return tuple(tag for move in self.moves for tag in (move.opening_tag, move.closing_tag))

    def stops(self) -> dict[str, tuple]:
        """Sampling settings that end a step at any tag: the tags as stop strings."""
        return {"stop": self.tag_texts}

    def ends_step(self, stop_reason: str | int | None) -> bool:
        """Whether a completion stopped at a tag (not at the end of the answer or the length limit)."""
        return stop_reason in self.tag_texts

    def content_ids(self, completion: Completion, tokenizer: Any) -> list[int]:
        """A step's content as the trace holds it: the text before the tag that stopped it (or before the start of
        a tag the length limit cut), encoded on its own; a step ended by the end of sequence keeps its tokens."""
        if completion.finish_reason == "stop" and not self.ends_step(completion.stop_reason):
            return list(completion.token_ids[:-1])
        text = completion.text if completion.finish_reason == "stop" else self._without_partial_tag(completion.text)
        return tokenizer.encode(text, add_special_tokens=False)

    def _without_partial_tag(self, text: str) -> str:
        """`text` without a trailing beginning of a tag (`...</next_ste`), which a length limit can leave."""
        start = text.rfind("<")
        tail = text[start:] if start >= 0 else ""
        if tail and any(tag.startswith(tail) for tag in self.tag_texts):
            return text[:start]
        return text

    def encode_trace(self, text: str, tokenizer: Any) -> list[int]:
        """Token ids of a trace: each tag by its own encoding, each run of text between tags encoded alone."""
        ids: list[int] = []
        for piece in scan_text(text):
            if isinstance(piece, Tag):
                ids.extend(self.closings[piece.move] if piece.closing else self.openings[piece.move])
            else:
                ids.extend(tokenizer.encode(piece, add_special_tokens=False))
        return ids

    def step_spans(self, token_ids: Sequence[int]) -> list[StepSpan[int]]:
        """Steps of a trace as token ids; a span's tag positions are those of the tag's last token."""
        pieces: list[Tag | int] = []
        positions: list[int] = []
        index = 0
        while index < len(token_ids):
            match = self._tag_at(token_ids, index)
            piece, length = match if match is not None else (token_ids[index], 1)
            pieces.append(piece)
            positions.append(index + length - 1)
            index += length
        return [replace(span, open_index=positions[span.open_index],
                        close_index=None if span.close_index is None else positions[span.close_index])
                for span in assemble_spans(pieces)]

    def _tag_at(self, token_ids: Sequence[int], index: int) -> tuple[Tag, int] | None:
        for tag, ids in self._tags_by_ids:
            if tuple(token_ids[index : index + len(ids)]) == ids:
                return tag, len(ids)
        return None

    @cached_property
    def _tags_by_ids(self) -> list[tuple[Tag, tuple[int, ...]]]:
        tags = [(Tag(move, closing=False), ids) for move, ids in self.openings.items()]
        tags += [(Tag(move, closing=True), ids) for move, ids in self.closings.items()]
        return sorted(tags, key=lambda item: -len(item[1]))

    def opening_logprobs(self, next_token_logprobs: NextTokenLogprobs, prefixes: Sequence[list[int]],
                         moves: Sequence[Move]) -> list[list[float]]:
        """For each prefix, log P(the opening tag of each move follows it): the sum over the tag's tokens, all
        partial tags of all prefixes scored in one engine call."""
        needed: dict[tuple[int, ...], None] = {}
        for prefix in prefixes:
            for move in moves:
                tag = self.openings[move]
                for length in range(len(tag)):
                    needed[(*prefix, *tag[:length])] = None
        contexts = list(needed)
        candidates = sorted({token for move in moves for token in self.openings[move]})
        rows = next_token_logprobs([list(context) for context in contexts], candidates)
        score = {context: dict(zip(candidates, row)) for context, row in zip(contexts, rows)}
        return [[_tag_logprob(score, tuple(prefix), self.openings[move]) for move in moves] for prefix in prefixes]

    def to_json(self) -> dict:
        return {"kind": self.kind, "moves": {move.value: {"opening": move.opening_tag, "closing": move.closing_tag}
                                             for move in self.moves}}


def _tag_logprob(score: dict[tuple[int, ...], dict[int, float]], prefix: tuple[int, ...], tag: tuple[int, ...]) -> float:
    return sum(score[(*prefix, *tag[:length])][token] for length, token in enumerate(tag))
