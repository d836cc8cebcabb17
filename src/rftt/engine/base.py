"""The one interface that search, RL rollouts and evaluation generate through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import replace
from typing import Callable, Iterator, Sequence

from rftt.engine.types import Completion, EngineError, Prompt, SamplingParams, StreamRequest

Feed = Callable[[], Sequence[StreamRequest]]
"""Called by `Engine.stream` for more requests; an empty answer means none are ready yet."""


class Engine(ABC):
    """A generation backend. `generate` returns, for each prompt, `params.n` completions."""

    name: str = "engine"

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """Sample `params.n` completions for each prompt (text or token ids)."""

    @abstractmethod
    def next_token_logprobs(self, prefixes: Sequence[Prompt], candidate_token_ids: Sequence[int]) -> list[list[float]]:
        """For each prefix, the log-probability of each candidate as the very next token (full vocabulary)."""

    def stream(self, feed: Feed, params: SamplingParams) -> Iterator[tuple[int, int, Completion]]:
        """Serve requests as the caller produces them: yields (request number, sample, completion), request
        numbers counting every request fed, and calls `feed` again once it has yielded; ends when `feed` has
        nothing and nothing is in flight. This default serves each fed batch with `generate` calls (one per
        distinct length limit and sample count); engines that batch continuously admit new requests while
        earlier ones are still decoding, so results can come back in any order."""
        number = 0
        while requests := list(feed()):
            calls: dict[tuple[int, int], list[int]] = defaultdict(list)
            for index, request in enumerate(requests):
                calls[(request.n, stream_limit(request, params))].append(index)
            for (samples, limit), indices in calls.items():
                outputs = self.generate([requests[index].prompt for index in indices],
                                        replace(params, n=samples, max_new_tokens=limit))
                for index, completions in zip(indices, outputs):
                    for sample, completion in enumerate(completions):
                        yield number + index, sample, completion
            number += len(requests)

    def close(self) -> None:
        """Release what the engine holds (servers, processes, GPU memory)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


def stream_limit(request: StreamRequest, params: SamplingParams) -> int:
    """A request's length limit within a stream, checked against the stream's bound."""
    limit = request.max_new_tokens or params.max_new_tokens
    if not 1 <= limit <= params.max_new_tokens:
        raise EngineError(f"a stream request's max_new_tokens={limit} is outside 1..{params.max_new_tokens} "
                          "(the stream's SamplingParams.max_new_tokens)")
    return limit
