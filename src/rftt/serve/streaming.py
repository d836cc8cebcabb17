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
from rftt.engine.protocol import (
    ChatChunk,
    ChatChunkChoice,
    ChatDelta,
    CompletionChunk,
    CompletionChunkChoice,
    Usage,
    openai_error,
)
from rftt.engine.stops import DECODE_CONTEXT_TOKENS, REPLACEMENT_CHARACTER, cut_at_stop
from rftt.engine.types import Completion, EngineError, SamplingParams
from rftt.serve.batching import QueuedRequest

END_OF_STREAM = "data: [DONE]\n\n"


def _cleans_up_spaces(tokenizer) -> bool:
    """Whether decoding joins a space to the punctuation after it (" ," to ","; " 's" to "'s")."""
    return tokenizer.decode(tokenizer.encode("a ,", add_special_tokens=False)) == "a,"


class TextDeltas:
    """The text of one streamed choice, released piece by piece as it becomes final.

    New tokens are decoded after a short window of earlier ones (so a tokenizer that drops a
    leading space at the start of a decode still gives the whole's text), and only the unsent
    tail is searched for stop strings, so a step costs the same however long the answer grows.
    A tokenizer that cleans up spaces (" ," becomes ",") changes text already decoded: then the
    whole is decoded again (trailing whitespace is never sent before what follows it is known).
    """

    def __init__(self, engine: HFEngine, params: SamplingParams):
        self.tokenizer, self.stops = engine.tokenizer, params.stop
        self.hidden = engine.hidden_token_ids(params)
        self.hold = max((len(stop) for stop in params.stop), default=1) - 1
        self.cleans_up_spaces = _cleans_up_spaces(engine.tokenizer)
        self.token_ids: list[int] = []
        self.window_start = self.window_end = 0  # the decoded tokens whose text is already in `text`
        self.text = ""
        self.sent = ""

    def add(self, token_ids: list[int]) -> str:
        """The new final text after these tokens ("" when nothing new is final yet)."""
        self.token_ids.extend(token for token in token_ids if token not in self.hidden)
        self._decode()
        if not self.text.startswith(self.sent):  # only a whole decode can change sent text; it is final
            return ""
        tail = self.text[len(self.sent) :]
        stopped = cut_at_stop(tail, self.stops) if self.stops else tail
        if stopped == tail and self.hold:
            stopped = tail[: len(tail) - self.hold]
        delta = stopped.rstrip()
        if self.cleans_up_spaces:  # what follows may still remove the last space: hold back from it
            delta = delta[: delta.rfind(" ")] if " " in delta else ""
        self.sent += delta
        return delta

    def _decode(self) -> None:
        """Bring `text` up to date: the new tokens decoded after the last few (or, when a tokenizer's clean-up
        changed text already decoded, all of them again)."""
        known = self.tokenizer.decode(self.token_ids[self.window_start : self.window_end], skip_special_tokens=False)
        with_new = self.tokenizer.decode(self.token_ids[self.window_start :], skip_special_tokens=False)
        if with_new.endswith(REPLACEMENT_CHARACTER):
            return
        if with_new.startswith(known):
            self.text += with_new[len(known) :]
        else:
            self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=False)
        self.window_end = len(self.token_ids)
        self.window_start = max(self.window_end - DECODE_CONTEXT_TOKENS, 0)

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
        """The fields every chunk of this answer starts with."""
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
    body = chunk.model_dump_json() if isinstance(chunk, BaseModel) else json.dumps(chunk)
    return f"data: {body}\n\n"


async def _told_since_last(request: QueuedRequest) -> tuple[list[tuple[int, int, int]], bool]:
    """The tokens told since the last call (several steps at once when the server is busy, so it sends fewer,
    larger events), and whether the answer is now complete."""
    waiting = [await request.tokens.get()]
    while not request.tokens.empty():
        waiting.append(request.tokens.get_nowait())
    complete = waiting[-1] is None  # the end is always the last thing put
    return [told for step in waiting if step is not None for told in step], complete


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
        complete = False
        while not complete:
            told, complete = await _told_since_last(request)
            tokens: dict[tuple[int, int], list[int]] = defaultdict(list)
            for prompt_index, sample, token_id in told:
                tokens[(prompt_index, sample)].append(token_id)
            for key, token_ids in tokens.items():
                if key not in texts:  # once per choice: a TextDeltas reads the tokenizer's ways when made
                    texts[key] = TextDeltas(engine, request.params)
                delta = texts[key].add(token_ids)
                if delta:
                    yield event(chunks.delta(key[0] * samples + key[1], delta))
        results = await request.answer
        for prompt_index, completions in enumerate(results):
            for sample, completion in enumerate(completions):
                deltas = texts.get((prompt_index, sample))
                text = deltas.rest(completion) if deltas else completion.text
                yield event(chunks.finish(prompt_index * samples + sample, text, completion))
        if include_usage:
            yield event(chunks.usage(Usage.of(results)))
    except Exception as error:  # the answer has begun (status 200): the error goes to the client as an event
        yield event(openai_error(str(error), "invalid_request_error" if isinstance(error, EngineError) else "server_error"))
    finally:
        if not request.answer.done():
            request.leave()
    yield END_OF_STREAM
