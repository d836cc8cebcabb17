"""A pool of long-lived worker processes that run tasks under a wall-clock deadline each.

Workers are fresh interpreters started with `subprocess` over an inherited socket (not
`multiprocessing`), so they work whatever the parent's main module is and are safe beside
torch threads. A worker announces itself ready, then answers `(index, payload)` tasks one
at a time. A worker that overruns its deadline is killed and replaced (the task ends as
"timeout"); one that dies is replaced (the task ends as "died"). Used by the answer
verifier and the program sandbox.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

READY = "ready"
STOP = None
_MAX_START_FAILURES = 3
_LINUX_SET_PARENT_DEATH_SIGNAL = 1


def shared_at_exit(start: Callable[[], Any]) -> Callable[[], Any]:
    """A function giving one shared object, started by `start()` on first use and closed at exit."""
    shared: list[Any] = []

    def get() -> Any:
        if not shared:
            shared.append(start())
            atexit.register(shared[0].close)
        return shared[0]

    return get


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    ready: bool = False
    task: int | None = None
    deadline: float = field(default=float("inf"))


@dataclass(frozen=True)
class TaskResult:
    """How a task ended: "done" (with the worker's answer), "timeout" or "died"."""

    status: str
    value: Any = None


def die_with_parent() -> None:
    """Have the kernel kill this worker when its parent dies (Linux), and exit now if it already has."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_LINUX_SET_PARENT_DEATH_SIGNAL, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def serve_tasks(connection: Connection, handle: Callable[[Any], Any]) -> None:
    """The worker side: announce readiness, then answer each `(index, payload)` with `(index, handle(payload))`."""
    connection.send(READY)
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is STOP:
            return
        index, payload = task
        connection.send((index, handle(payload)))


class WorkerPool:
    """`size` workers started by `command(socket_fd)` (with `environment`, or this process's when None);
    `run(payloads, timeout)` answers them all, in order."""

    def __init__(self, command: Callable[[int], list[str]], size: int, name: str,
                 environment: dict[str, str] | None = None):
        self.command = command
        self.environment = environment
        self.size = size
        self.name = name
        self._workers: list[_Worker] = []
        self._start_failures = 0

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(self.command(theirs.fileno()), pass_fds=(theirs.fileno(),), env=self.environment)
        theirs.close()
        return _Worker(process, Connection(ours.detach()))

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.wait()
        worker.connection.close()
        self._workers[self._workers.index(worker)] = self._start_worker()

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [worker.process for worker in self._workers]

    def run(self, payloads: Sequence[Any], timeout: float) -> list[TaskResult]:
        """Every payload's result; each task gets `timeout` seconds of wall-clock time."""
        results: list[TaskResult | None] = [None] * len(payloads)
        queue = deque(range(len(payloads)))
        while len(self._workers) < self.size:
            self._workers.append(self._start_worker())
        while queue or any(worker.task is not None for worker in self._workers):
            for worker in self._workers:
                if worker.ready and worker.task is None and queue:
                    index = queue.popleft()
                    worker.connection.send((index, payloads[index]))
                    worker.task, worker.deadline = index, time.monotonic() + timeout
            self._collect(results, timeout)
            self._expire(results)
        return [result for result in results if result is not None]

    def _collect(self, results: list[TaskResult | None], timeout: float) -> None:
        """Wait until a worker answers or the nearest deadline passes, and record what came back."""
        nearest = min(worker.deadline for worker in self._workers)
        wait_seconds = max(0.0, min(nearest - time.monotonic(), timeout))
        by_connection = {worker.connection: worker for worker in self._workers}
        for connection in wait(list(by_connection), timeout=wait_seconds):
            worker = by_connection[connection]
            try:
                message = connection.recv()
            except (EOFError, OSError):
                self._count_start_failure(worker)
                if worker.task is not None:
                    results[worker.task] = TaskResult("died")
                self._replace(worker)
                continue
            if message == READY:
                worker.ready = True
            else:
                index, value = message
                results[index] = TaskResult("done", value)
                worker.task, worker.deadline = None, float("inf")

    def _count_start_failure(self, worker: _Worker) -> None:
        """A worker that dies before it is ready means a broken installation, not a bad task."""
        if worker.ready:
            return
        self._start_failures += 1
        if self._start_failures >= _MAX_START_FAILURES:
            raise RuntimeError(f"{self.name} worker processes exit while starting (exit code {worker.process.poll()})")

    def _expire(self, results: list[TaskResult | None]) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None and now >= worker.deadline:
                results[worker.task] = TaskResult("timeout")
                self._replace(worker)

    def close(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            try:
                worker.connection.send(STOP)
            except OSError:
                pass
        for worker in self._workers:
            try:
                worker.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.connection.close()
        self._workers = []
