"""Functional tokens as real vocabulary: add them to a tokenizer and model, initialise, save, load, scan ids.

Every opening and closing tag becomes one special token added through the tokenizer API.
Its embedding row starts from the mean embedding of the move's own words (the opening
tag from "analyze", the closing tag from "end analyze"), so a freshly added token already
means something to the model. Ids are always looked up through the tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rftt.errors import RfttError
from rftt.tokens.moves import Move
from rftt.tokens.steps import Step, StepSpan, Tag, assemble_spans
from rftt.tokens.text_tags import NextTokenLogprobs, TextTags

if TYPE_CHECKING:
    from rftt.engine.types import Completion

FUNCTIONAL_TOKENS_FILE = "functional_tokens.json"
_FILE_FORMAT_VERSION = 1
_CLOSING_WORDS_PREFIX = "end "


class FunctionalTokenError(RfttError, ValueError):
    """The tokenizer's functional tokens are missing, split into several ids, or differ from a checkpoint's."""


def opening_init_text(move: Move) -> str:
    """Words whose mean embedding initialises the move's opening token."""
    return move.words


def closing_init_text(move: Move) -> str:
    """Words whose mean embedding initialises the move's closing token (distinct from the opening one)."""
    return _CLOSING_WORDS_PREFIX + move.words


@dataclass(frozen=True)
class FunctionalTokens:
    """The ids of the functional tokens in one tokenizer, with lookups both ways."""

    opening_ids: dict[Move, int]
    closing_ids: dict[Move, int]
    kind = "functional_tokens"

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, moves: Iterable[Move] = tuple(Move)) -> "FunctionalTokens":
        """Read the ids of `moves`' tags, checking each tag encodes to exactly one id."""
        moves = tuple(moves)
        return cls(
            opening_ids={move: _single_id(tokenizer, move.opening_tag) for move in moves},
            closing_ids={move: _single_id(tokenizer, move.closing_tag) for move in moves},
        )

    @property
    def moves(self) -> tuple[Move, ...]:
        return tuple(self.opening_ids)

    @property
    def all_ids(self) -> list[int]:
        return [*self.opening_ids.values(), *self.closing_ids.values()]

    def opening(self, move: Move) -> list[int]:
        return [self.opening_ids[move]]

    def closing(self, move: Move) -> list[int]:
        return [self.closing_ids[move]]

    def stops(self) -> dict[str, tuple]:
        """Sampling settings that end a step at any functional token: their ids as stop ids."""
        return {"stop_token_ids": tuple(self.all_ids)}

    def ends_step(self, stop_reason: str | int | None) -> bool:
        """Whether a completion stopped at a functional token (not at the end of the answer or the length limit)."""
        return stop_reason in self.all_ids

    def content_ids(self, completion: Completion, tokenizer: Any) -> list[int]:
        """A step's content ids: the completion without the token that stopped it (a functional token or the
        end of sequence; engines that report no stop reason for the end of sequence still say `stop`)."""
        return list(completion.token_ids[:-1] if completion.finish_reason == "stop" else completion.token_ids)

    def encode_trace(self, text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids of a trace (each tag is one special token, so the tokenizer never merges across it)."""
        return tokenizer.encode(text, add_special_tokens=False)

    def opening_logprobs(self, next_token_logprobs: NextTokenLogprobs, prefixes: Sequence[list[int]],
                         moves: Sequence[Move]) -> list[list[float]]:
        """For each prefix, the log-probability of each move's opening token as the next token."""
        return next_token_logprobs(list(prefixes), [self.opening_ids[move] for move in moves])

    def tag_of(self, token_id: int) -> Tag | None:
        """The tag a token id stands for, or None for an ordinary token."""
        return self._tags_by_id.get(token_id)

    @cached_property
    def _tags_by_id(self) -> dict[int, Tag]:
        tags = {token_id: Tag(move, closing=False) for move, token_id in self.opening_ids.items()}
        tags.update({token_id: Tag(move, closing=True) for move, token_id in self.closing_ids.items()})
        return tags

    def step_spans(self, token_ids: Sequence[int]) -> list[StepSpan[int]]:
        """Steps of a trace given as token ids, with the positions of their opening and closing tokens."""
        tags = self._tags_by_id
        return assemble_spans([tags.get(token_id, token_id) for token_id in token_ids])

    def parse_token_ids(self, token_ids: Sequence[int], tokenizer: PreTrainedTokenizerBase) -> list[Step]:
        """Steps of a trace given as token ids, their content decoded to text."""
        return [
            Step(span.move, tokenizer.decode(list(span.content), skip_special_tokens=False), span.closed)
            for span in self.step_spans(token_ids)
        ]

    def to_json(self) -> dict:
        return {
            "format_version": _FILE_FORMAT_VERSION,
            "kind": self.kind,
            "moves": {
                move.value: {
                    "opening": move.opening_tag,
                    "closing": move.closing_tag,
                    "opening_id": self.opening_ids[move],
                    "closing_id": self.closing_ids[move],
                }
                for move in self.moves
            },
        }


def _single_id(tokenizer: PreTrainedTokenizerBase, tag: str) -> int:
    ids = tokenizer.encode(tag, add_special_tokens=False)
    if len(ids) != 1:
        raise FunctionalTokenError(
            f"functional token {tag!r} encodes to {len(ids)} ids {ids}, not one: "
            "add the functional tokens with rftt.tokens.add_functional_tokens(model, tokenizer)"
        )
    return ids[0]


def add_functional_tokens(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    moves: Iterable[Move] = tuple(Move),
) -> FunctionalTokens:
    """Add the tags of `moves` as special tokens and give each a word-mean embedding row.

    Spare (padded) embedding rows are used first; the matrices grow only when the tokenizer
    outgrows them. Tags already present are kept as they are. With `model=None` only the
    tokenizer changes.
    """
    moves = tuple(moves)
    tags = [tag for move in moves for tag in (move.opening_tag, move.closing_tag)]
    new_tags = [tag for tag in tags if tag not in tokenizer.get_vocab()]
    if new_tags:
        tokenizer.add_tokens(
            [AddedToken(tag, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False) for tag in new_tags],
            special_tokens=True,
        )
    tokens = FunctionalTokens.from_tokenizer(tokenizer, moves)
    if model is not None and new_tags:
        fit_embedding_rows(model, len(tokenizer))
        initialise_embeddings(model, tokenizer, tokens, only_tags=set(new_tags))
    return tokens


def fit_embedding_rows(model: PreTrainedModel, vocabulary_size: int) -> None:
    """Grow the embedding matrices to `vocabulary_size` rows if the spare rows do not suffice."""
    if model.get_input_embeddings().num_embeddings < vocabulary_size:
        model.resize_token_embeddings(vocabulary_size, mean_resizing=False)


def _embedding_matrices(model: PreTrainedModel) -> list[torch.Tensor]:
    """The input embedding matrix, plus the output one when it is not tied to the input."""
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices


def initialise_embeddings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokens: FunctionalTokens,
    only_tags: set[str] | None = None,
) -> None:
    """Set each functional token's rows to the mean of the rows of its move's words."""
    targets = [(move.opening_tag, tokens.opening_ids[move], opening_init_text(move)) for move in tokens.moves]
    targets += [(move.closing_tag, tokens.closing_ids[move], closing_init_text(move)) for move in tokens.moves]
    with torch.no_grad():
        for matrix in _embedding_matrices(model):
            for tag, token_id, words in targets:
                if only_tags is None or tag in only_tags:
                    word_ids = tokenizer.encode(words, add_special_tokens=False)
                    matrix[token_id] = matrix[word_ids].mean(dim=0)


StepTags = FunctionalTokens | TextTags
"""How a trace marks its steps: functional tokens (vocabulary entries), or the same tags as ordinary text."""


def save_step_tags(directory: str | Path, tags: StepTags) -> Path:
    """Record a checkpoint's step tags (the functional tokens and their ids, or that tags are text)."""
    path = Path(directory) / FUNCTIONAL_TOKENS_FILE
    path.write_text(json.dumps(tags.to_json(), indent=2) + "\n")
    return path


def load_step_tags(directory: str | Path, tokenizer: PreTrainedTokenizerBase) -> StepTags | None:
    """The step tags a checkpoint recorded, checked against its tokenizer; None if it recorded none."""
    path = Path(directory) / FUNCTIONAL_TOKENS_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        recorded, kind = record["moves"], record.get("kind", FunctionalTokens.kind)
        moves = [Move(name) for name in recorded]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise FunctionalTokenError(f"{path}: not a step-tag record ({error})") from None
    if kind == TextTags.kind:
        return text_tags(tokenizer, f"{path}: field kind", moves)
    if kind != FunctionalTokens.kind:
        raise FunctionalTokenError(f"{path}: field kind: {kind!r} is not {FunctionalTokens.kind!r} or {TextTags.kind!r}")
    tokens = FunctionalTokens.from_tokenizer(tokenizer, moves)
    for move in moves:
        expected = (recorded[move.value].get("opening_id"), recorded[move.value].get("closing_id"))
        actual = (tokens.opening_ids[move], tokens.closing_ids[move])
        if expected != actual:
            raise FunctionalTokenError(
                f"{path}: field moves.{move.value}: recorded ids {expected} but the tokenizer gives {actual}"
            )
    return tokens


def text_tags(tokenizer: PreTrainedTokenizerBase, where: str, moves: Sequence[Move] = tuple(Move)) -> TextTags:
    """Text tags for `tokenizer`, refused when it holds the tags as tokens (`where` names the model or record)."""
    added = tokenizer.get_added_vocab()
    as_tokens = [tag for move in moves for tag in (move.opening_tag, move.closing_tag) if tag in added]
    if as_tokens:
        raise FunctionalTokenError(f"{where}: the step tags are to stay text, but the tokenizer has {as_tokens[:3]} "
                                   "as tokens (start from a model without functional tokens)")
    return TextTags.from_tokenizer(tokenizer, moves)
