"""Streamed answers as server-sent events: each choice's text released as soon as it can no longer change.

Text is held back while a stop string may be forming at its end, while its last character is an
unfinished UTF-8 sequence, and while it ends in whitespace (a tokenizer's clean-up may still join
it to what follows), so the streamed pieces add up to exactly the text a non-streamed request gets.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import AsyncIterator

from pydantic import BaseModel

from rftt.engine.hf import HFEngine
from rftt.engine.stops import cut_at_stop
from rftt.engine.types import Completion, EngineError, SamplingParams
from rftt.serve.batching import QueuedRequest
from rftt.serve.protocol import (
    ChatChunk,
    ChatChunkChoice,
    ChatDelta,
    CompletionChunk,
    CompletionChunkChoice,
    Usage,
)

END_OF_STREAM = "data: [DONE]\n\n"
_UNFINISHED_CHARACTER = "\ufffd"
_DECODE_CONTEXT_TOKENS = 4
"""Earlier tokens decoded with the new ones, so their text is read in context."""


class TextDeltas:
    """The text of one streamed choice, released piece by piece as it becomes final. Tokens are decoded a few at
    a time (the new ones after a short window of earlier ones, so a tokenizer that drops or merges spaces at
    the start of a decode still yields the text of the whole), so each step costs the same however long the
    answer grows."""

    def __init__(self, engine: HFEngine, params: SamplingParams):
        self.tokenizer, self.stops = engine.tokenizer, params.stop
        self.hidden = engine.hidden_token_ids(params)
        self.hold = max((len(stop) for stop in params.stop), default=1) - 1
        self.token_ids: list[int] = []
        self.window_start = self.window_end = 0  # the decoded tokens whose text is already in `text`
        self.text = ""
        self.sent = ""

    def add(self, token_ids: list[int]) -> str:
        """The new final text after these tokens ("" when nothing new is final yet)."""
        self.token_ids.extend(token for token in token_ids if token not in self.hidden)
        self._decode_new_tokens()
        final = cut_at_stop(self.text, self.stops) if self.stops else self.text
        if final == self.text and self.hold:
            final = final[: len(final) - self.hold]
        final = final.rstrip()
        if len(final) <= len(self.sent) or not final.startswith(self.sent):
            return ""
        delta, self.sent = final[len(self.sent) :], final
        return delta

    def _decode_new_tokens(self) -> None:
        known = self.tokenizer.decode(self.token_ids[self.window_start : self.window_end], skip_special_tokens=False)
        with_new = self.tokenizer.decode(self.token_ids[self.window_start :], skip_special_tokens=False)
        if len(with_new) > len(known) and not with_new.endswith(_UNFINISHED_CHARACTER):
            self.text += with_new[len(known) :]
            self.window_start, self.window_end = max(self.window_end - _DECODE_CONTEXT_TOKENS, 0), len(self.token_ids)

    def rest(self, completion: Completion) -> str:
        """What is still to send of the choice's whole text."""
        return completion.text[len(self.sent) :]


@dataclass(frozen=True)
class ChunkWriter(ABC):
    """How one kind of endpoint writes the chunks of a streamed answer, which share its id, time and model."""

    id: str
    created: int
    model: str

    def header(self) -> dict:
        return {"id": self.id, "created": self.created, "model": self.model}

    @abstractmethod
    def opening(self, index: int) -> BaseModel | None:
        """The chunk that opens a choice, if the endpoint sends one."""

    @abstractmethod
    def delta(self, index: int, text: str) -> BaseModel:
        """A piece of a choice's text."""

    @abstractmethod
    def finish(self, index: int, text: str, completion: Completion) -> BaseModel:
        """A choice's last piece and why it ended."""

    @abstractmethod
    def usage(self, usage: Usage) -> BaseModel:
        """The last chunk, with the token counts (when asked for)."""


class CompletionChunks(ChunkWriter):
    """Chunks of /v1/completions: text pieces, then each choice's finish reason."""

    def opening(self, index: int) -> None:
        return None

    def delta(self, index: int, text: str) -> CompletionChunk:
        return CompletionChunk(**self.header(), choices=[CompletionChunkChoice(index=index, text=text)])

    def finish(self, index: int, text: str, completion: Completion) -> CompletionChunk:
        choice = CompletionChunkChoice(index=index, text=text, finish_reason=completion.finish_reason,
                                       stop_reason=completion.stop_reason)
        return CompletionChunk(**self.header(), choices=[choice])

    def usage(self, usage: Usage) -> CompletionChunk:
        return CompletionChunk(**self.header(), choices=[], usage=usage)


class ChatChunks(ChunkWriter):
    """Chunks of /v1/chat/completions: the assistant's role first, then content pieces, then the finish reason."""

    def opening(self, index: int) -> ChatChunk:
        return self.delta(index, "", role="assistant")

    def delta(self, index: int, text: str, role: str | None = None) -> ChatChunk:
        return ChatChunk(**self.header(), choices=[ChatChunkChoice(index=index, delta=ChatDelta(role=role, content=text))])

    def finish(self, index: int, text: str, completion: Completion) -> ChatChunk:
        delta = ChatDelta(content=text) if text else ChatDelta()
        return ChatChunk(**self.header(), choices=[ChatChunkChoice(index=index, delta=delta,
                                                                   finish_reason=completion.finish_reason)])

    def usage(self, usage: Usage) -> ChatChunk:
        return ChatChunk(**self.header(), choices=[], usage=usage)


def event(chunk: BaseModel | dict) -> str:
    """One server-sent event holding a chunk as JSON."""
    body = chunk.model_dump_json(exclude_none=True) if isinstance(chunk, BaseModel) else json.dumps(chunk)
    return f"data: {body}\n\n"


async def _all_waiting(request: QueuedRequest) -> list[tuple[int, int, int]] | None:
    """The tokens told since the last call, waiting for some (several steps at once when the server is busy,
    so it sends fewer, larger events); None once the answer is complete."""
    told = await request.tokens.get()
    while told is not None and not request.tokens.empty():
        more = request.tokens.get_nowait()
        if more is None:
            request.tokens.put_nowait(None)
            break
        told = told + more
    return told


async def stream_events(request: QueuedRequest, engine: HFEngine, chunks: ChunkWriter,
                        include_usage: bool) -> AsyncIterator[str]:
    """A streamed request's answer as server-sent events; a client that leaves stops its generation."""
    samples = request.params.n
    texts: dict[tuple[int, int], TextDeltas] = {}
    try:
        for index in range(len(request.prompts) * samples):
            opening = chunks.opening(index)
            if opening is not None:
                yield event(opening)
        while (told := await _all_waiting(request)) is not None:
            tokens: dict[tuple[int, int], list[int]] = defaultdict(list)
            for prompt_index, sample, token_id in told:
                tokens[(prompt_index, sample)].append(token_id)
            for key, token_ids in tokens.items():
                delta = texts.setdefault(key, TextDeltas(engine, request.params)).add(token_ids)
                if delta:
                    yield event(chunks.delta(key[0] * samples + key[1], delta))
        results = await request.answer
        for prompt_index, completions in enumerate(results):
            for sample, completion in enumerate(completions):
                text = texts.get((prompt_index, sample), TextDeltas(engine, request.params)).rest(completion)
                yield event(chunks.finish(prompt_index * samples + sample, text, completion))
        if include_usage:
            yield event(chunks.usage(Usage.of(results)))
        yield END_OF_STREAM
    except EngineError as error:
        yield event({"error": {"message": str(error), "type": "invalid_request_error"}})
        yield END_OF_STREAM
    finally:
        if not request.answer.done():
            request.leave()
