"""Merge concurrent generation requests into few engine calls, one engine call at a time.

Requests that arrive within a short window and share their sampling parameters become
one `engine.generate` call, streamed or not. A request with a seed runs on its own, so that
the same request and seed give the same text whatever else is being served. A streamed
request is told its tokens as they are sampled; when its client leaves, its rows stop at
the next step (or it never starts, if it is still waiting).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence, TypeVar

from rftt.engine.hf import HFEngine
from rftt.engine.types import Completion, Prompt, SamplingParams, StreamRequest, TokenListener

Result = TypeVar("Result")
DEFAULT_WINDOW_SECONDS = 0.01
DEFAULT_MAX_PROMPTS_PER_CALL = 64


@dataclass
class QueuedRequest:
    """One request's prompts and parameters, and where its answer goes. A streamed request also gets lists
    of (prompt index, sample, token id) on `tokens` as they are sampled, then None once `answer` is set."""

    prompts: list[Prompt]
    params: SamplingParams
    answer: asyncio.Future
    tokens: asyncio.Queue | None = None
    client_left: bool = False

    def leave(self) -> None:
        """The client went away: stop generating for it."""
        self.client_left = True


@dataclass
class BatchingStatistics:
    """How many requests were served in how many engine calls; how many streamed, and stopped early."""

    requests: int = 0
    engine_calls: int = 0
    largest_call_prompts: int = 0
    calls_by_size: dict[int, int] = field(default_factory=dict)
    streamed_requests: int = 0
    stopped_requests: int = 0


class RequestBatcher:
    """Queues requests and serves them with one engine thread (engines are not thread-safe)."""

    def __init__(self, engine: HFEngine | None, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 max_prompts_per_call: int = DEFAULT_MAX_PROMPTS_PER_CALL):
        self.engine = engine
        self.window_seconds = window_seconds
        self.max_prompts_per_call = max_prompts_per_call
        self.statistics = BatchingStatistics()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rftt-engine")
        self._queue: asyncio.Queue[QueuedRequest] | None = None
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
        """Each prompt's `params.n` completions, generated beside the other requests waiting now."""
        return await self.submit(prompts, params).answer

    def submit(self, prompts: list[Prompt], params: SamplingParams, *, streamed: bool = False) -> QueuedRequest:
        """Queue a request (streamed: its tokens are told as they are sampled) and return it."""
        assert self._queue is not None, "RequestBatcher.start() was not called"
        request = QueuedRequest(prompts, params, asyncio.get_running_loop().create_future(),
                          asyncio.Queue() if streamed else None)
        self.statistics.requests += 1
        self.statistics.streamed_requests += streamed
        self._queue.put_nowait(request)
        return request

    async def _collect(self) -> list[QueuedRequest]:
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

    async def _run_group(self, group: list[QueuedRequest]) -> None:
        """One engine call for a group; each request is answered as soon as its own samples are done."""
        left = [request for request in group if request.client_left]
        self.statistics.stopped_requests += len(left)
        for request in left:
            _finish(request)
        group = [request for request in group if not request.client_left]
        if not group:
            return
        self._count_call(sum(len(request.prompts) for request in group))
        listener = self._listener(group) if any(request.tokens is not None for request in group) else None
        collected = [[[None] * request.params.n for _ in request.prompts] for request in group]
        loop = asyncio.get_running_loop()
        try:
            await self.run_exclusive(lambda: self._generate(group, collected, listener, loop))
        except Exception as error:  # each waiting request gets the engine's error, the server keeps going
            for request in group:
                _finish(request, error=error)
            return
        for request, completions in zip(group, collected):  # those stopped early, their client gone
            _finish(request, [[completion for completion in samples if completion is not None] for samples in completions])

    def _generate(self, group: list[QueuedRequest], collected: list[list[list[Completion | None]]],
                  listener: TokenListener | None, loop: asyncio.AbstractEventLoop) -> None:
        """On the engine thread: stream the group's prompts, each with its own length limit, and answer each
        request (on the event loop) once all its samples are done."""
        owners = _prompt_owners(group)
        requests = [StreamRequest(prompt, request.params.n, request.params.max_new_tokens)
                    for request in group for prompt in request.prompts]
        params = replace(group[0].params, max_new_tokens=max(request.params.max_new_tokens for request in group))
        missing = [len(request.prompts) * request.params.n for request in group]
        fed = [requests]
        for number, sample, completion in self.engine.stream(lambda: fed.pop() if fed else [], params, listener):
            position, index = owners[number]
            collected[position][index][sample] = completion
            missing[position] -= 1
            if missing[position] == 0:
                loop.call_soon_threadsafe(_finish, group[position], collected[position])

    def _count_call(self, prompts: int) -> None:
        self.statistics.engine_calls += 1
        self.statistics.largest_call_prompts = max(self.statistics.largest_call_prompts, prompts)
        self.statistics.calls_by_size[prompts] = self.statistics.calls_by_size.get(prompts, 0) + 1

    def _listener(self, group: list[QueuedRequest]) -> TokenListener:
        """Hands each step's tokens to the streamed requests they belong to (on the event loop's thread) and
        names the requests whose clients left, so the engine stops their rows."""
        loop = asyncio.get_running_loop()
        owners = _prompt_owners(group)
        stopped: set[int] = set()

        def listen(told: Sequence[tuple[int, int, int]]) -> list[int]:
            tokens: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
            for number, sample, token in told:
                position, index = owners[number]
                if group[position].tokens is not None:
                    tokens[position].append((index, sample, token))
            if tokens:  # one wake-up of the event loop per step, however many requests stream
                loop.call_soon_threadsafe(_deliver, group, tokens)
            if not any(request.client_left for request in group):
                return []
            leaving = {position for position, request in enumerate(group)
                       if request.client_left and not request.answer.done()}
            self.statistics.stopped_requests += len(leaving - stopped)
            stopped.update(leaving)
            return [number for number, (position, _) in enumerate(owners) if position in leaving]

        return listen


def _deliver(group: list[QueuedRequest], tokens: dict[int, list[tuple[int, int, int]]]) -> None:
    """Put one step's tokens on the queues of the streamed requests they belong to."""
    for position, items in tokens.items():
        group[position].tokens.put_nowait(items)


def _prompt_owners(group: list[QueuedRequest]) -> list[tuple[int, int]]:
    """For each prompt of an engine call, in order: its request's place in the group and its place in the request."""
    return [(position, index) for position, request in enumerate(group) for index in range(len(request.prompts))]


def _finish(request: QueuedRequest, results: list[list[Completion]] | None = None,
            error: Exception | None = None) -> None:
    """Give a request its answer (or the engine's error; nothing to one whose client left) and end its token stream."""
    if not request.answer.done():
        if request.client_left:
            request.answer.cancel()
        elif error is not None:
            request.answer.set_exception(error)
        else:
            request.answer.set_result(results)
    if request.tokens is not None:
        request.tokens.put_nowait(None)


def _mergeable_groups(requests: list[QueuedRequest]) -> list[list[QueuedRequest]]:
    """Requests grouped by equal sampling parameters but for their length limits (each keeps its own); seeded
    requests stay alone."""
    groups: dict[SamplingParams, list[QueuedRequest]] = {}
    alone: list[list[QueuedRequest]] = []
    for request in requests:
        if request.params.seed is not None:
            alone.append([request])
        else:
            groups.setdefault(replace(request.params, max_new_tokens=1), []).append(request)
    return [*groups.values(), *alone]
