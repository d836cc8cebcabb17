"""Merge concurrent generation requests into few engine calls, one engine call at a time.

Requests that arrive within a short window and share their sampling parameters become
one `engine.generate` call. A request with a seed runs on its own, so that the same
request and seed give the same text whatever else is being served.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from rftt.engine.base import Engine
from rftt.engine.types import Completion, Prompt, SamplingParams

Result = TypeVar("Result")
DEFAULT_WINDOW_SECONDS = 0.01
DEFAULT_MAX_PROMPTS_PER_CALL = 64


@dataclass
class _Request:
    prompts: list[Prompt]
    params: SamplingParams
    future: asyncio.Future


@dataclass
class BatchingStatistics:
    """How many requests were served in how many engine calls."""

    requests: int = 0
    engine_calls: int = 0
    largest_call_prompts: int = 0
    calls_by_size: dict[int, int] = field(default_factory=dict)


class RequestBatcher:
    """Queues requests and serves them with one engine thread (engines are not thread-safe)."""

    def __init__(self, engine: Engine | None, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 max_prompts_per_call: int = DEFAULT_MAX_PROMPTS_PER_CALL):
        self.engine = engine
        self.window_seconds = window_seconds
        self.max_prompts_per_call = max_prompts_per_call
        self.statistics = BatchingStatistics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rftt-engine")
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    async def run_exclusive(self, function: Callable[[], Result]) -> Result:
        """Run any engine call on the engine thread, between generation calls."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        assert self._queue is not None, "RequestBatcher.start() was not called"
        future = asyncio.get_running_loop().create_future()
        self.statistics.requests += 1
        await self._queue.put(_Request(prompts, params, future))
        return await future

    async def _collect(self) -> list[_Request]:
        """The first waiting request, plus those that arrive within the window (up to the prompt cap)."""
        assert self._queue is not None
        requests = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_seconds
        while sum(len(request.prompts) for request in requests) < self.max_prompts_per_call:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                requests.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except asyncio.TimeoutError:
                break
        return requests

    async def _serve(self) -> None:
        while True:
            for group in _mergeable_groups(await self._collect()):
                await self._run_group(group)

    async def _run_group(self, group: list[_Request]) -> None:
        prompts = [prompt for request in group for prompt in request.prompts]
        self.statistics.engine_calls += 1
        self.statistics.largest_call_prompts = max(self.statistics.largest_call_prompts, len(prompts))
        self.statistics.calls_by_size[len(prompts)] = self.statistics.calls_by_size.get(len(prompts), 0) + 1
        try:
            results = await self.run_exclusive(lambda: self.engine.generate(prompts, group[0].params))
        except Exception as error:  # each waiting request gets the engine's error, the server keeps going
            for request in group:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        start = 0
        for request in group:
            if not request.future.done():
                request.future.set_result(results[start : start + len(request.prompts)])
            start += len(request.prompts)


def _mergeable_groups(requests: list[_Request]) -> list[list[_Request]]:
    """Requests grouped by equal sampling parameters; seeded requests stay alone."""
    groups: dict[SamplingParams, list[_Request]] = {}
    alone: list[list[_Request]] = []
    for request in requests:
        if request.params.seed is not None:
            alone.append([request])
        else:
            groups.setdefault(request.params, []).append(request)
    return [*groups.values(), *alone]
