"""Stop strings during batched decoding, without decoding every row at every step.

A stop string can only be completed by a token whose text holds the string's last
character (or a partial UTF-8 byte). Those candidate ids are found once per tokenizer
and stop set; at each step only rows whose new token is a candidate decode their tail.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

REPLACEMENT_CHARACTER = "\ufffd"
"""What decoding gives for the bytes of a character not yet complete."""
DECODE_CONTEXT_TOKENS = 4
"""Earlier tokens decoded with the newest ones, so their text is read in context."""


@lru_cache(maxsize=16)
def _vocabulary_texts(tokenizer: PreTrainedTokenizerBase, size: int) -> tuple[str, ...]:
    """The text of every token id (keyed by size too, since added tokens change the vocabulary)."""
    return tuple(tokenizer.batch_decode([[token_id] for token_id in range(size)]))


class StopStrings:
    """Finds the first stop string in a growing completion, checking only rows that could complete one."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        last_characters = {stop[-1] for stop in self.stops} | {REPLACEMENT_CHARACTER}
        texts = _vocabulary_texts(tokenizer, len(tokenizer))
        self.candidate_ids = torch.tensor(
            [token_id for token_id, text in enumerate(texts) if any(character in text for character in last_characters)],
            dtype=torch.long,
        )
        self.window = max((len(stop) for stop in self.stops), default=0) + DECODE_CONTEXT_TOKENS

    def __bool__(self) -> bool:
        return bool(self.stops)

    def candidate_rows(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """Indices of rows whose newest token could complete a stop string."""
        return torch.isin(new_tokens, self.candidate_ids.to(new_tokens.device)).nonzero().flatten()

    def completed(self, token_ids: Sequence[int]) -> str | None:
        """The stop string that the last tokens of `token_ids` contain, if any."""
        tail = self.tokenizer.decode(list(token_ids[-self.window :]), skip_special_tokens=False)
        return next((stop for stop in self.stops if stop in tail), None)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    positions = [text.find(stop) for stop in stops if stop in text]
    return text[: min(positions)] if positions else text
