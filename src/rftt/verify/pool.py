"""A pool of worker processes that compare answers, each comparison under a wall-clock timeout.

Extraction is linear-time and runs in the caller; only the comparison (which may call
sympy through math-verify and stall on a pathological expression) goes to a worker
(`rftt.verify.worker`, a fresh interpreter, so it is safe beside torch threads). A worker
that overruns its deadline is killed and replaced, and that prediction is judged
`reason="timeout"`; one that dies is replaced and judged `reason="error"`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Sequence

from rftt.verify.equivalence import is_choice_letter
from rftt.verify.extract import extract_answer
from rftt.verify.outcome import (
    CheckOptions,
    Outcome,
    as_text,
    gold_answer,
    outcome_before_comparison,
    outcome_of_comparison,
)
from rftt.verify.worker import READY, STOP
from rftt.verify.worker import command as worker_command

DEFAULT_TIMEOUT_SECONDS = 5.0
_MAX_DEFAULT_WORKERS = 4
_MAX_START_FAILURES = 3


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    ready: bool = False
    task: tuple[int, str] | None = None
    deadline: float = field(default=float("inf"))


class VerifierPool:
    """Judges many predictions at once in worker processes; never raises on input, never hangs."""

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.size = workers or max(1, min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
        self.timeout = timeout
        self._workers: list[_Worker] = []
        self._start_failures = 0

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(worker_command(theirs.fileno(), self.timeout), pass_fds=(theirs.fileno(),))
        theirs.close()
        return _Worker(process, Connection(ours.detach()))

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.wait()
        worker.connection.close()
        self._workers[self._workers.index(worker)] = self._start_worker()

    def check_many(
        self, predictions: Sequence[object], golds: Sequence[object], options: CheckOptions = CheckOptions()
    ) -> list[Outcome]:
        """One Outcome per (prediction, gold) pair, in order."""
        if len(predictions) != len(golds):
            raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
        results: list[Outcome | None] = [None] * len(predictions)
        queue: deque[tuple[int, str, str]] = deque()
        for index, (prediction, gold) in enumerate(zip(predictions, golds)):
            text, gold_text = as_text(prediction), as_text(gold)
            extracted = extract_answer(
                text or "",
                last_number_fallback=options.last_number_fallback,
                multiple_choice=gold_text is not None and is_choice_letter(gold_text),
            )
            early = outcome_before_comparison(extracted, gold_text)
            if early is not None:
                results[index] = early
            else:
                queue.append((index, extracted, gold_answer(gold_text)))
        if queue:
            self._run(queue, results, options)
        return [outcome for outcome in results if outcome is not None]

    def _run(self, queue: deque, results: list[Outcome | None], options: CheckOptions) -> None:
        while len(self._workers) < self.size:
            self._workers.append(self._start_worker())
        while queue or any(worker.task for worker in self._workers):
            for worker in self._workers:
                if worker.ready and worker.task is None and queue:
                    index, extracted, gold = queue.popleft()
                    worker.connection.send((index, extracted, gold, options.relative_tolerance))
                    worker.task, worker.deadline = (index, extracted), time.monotonic() + self.timeout
            self._collect(results)
            self._expire(results)

    def _collect(self, results: list[Outcome | None]) -> None:
        """Wait until a worker answers or the nearest deadline passes, and record what came back."""
        nearest = min(worker.deadline for worker in self._workers)
        wait_seconds = max(0.0, min(nearest - time.monotonic(), self.timeout))
        by_connection = {worker.connection: worker for worker in self._workers}
        for connection in wait(list(by_connection), timeout=wait_seconds):
            worker = by_connection[connection]
            try:
                message = connection.recv()
            except (EOFError, OSError):
                self._count_start_failure(worker)
                if worker.task is not None:
                    results[worker.task[0]] = Outcome(False, worker.task[1], "error")
                self._replace(worker)
                continue
            if message == READY:
                worker.ready = True
            else:
                index, equal = message
                results[index] = outcome_of_comparison(worker.task[1], equal)
                worker.task, worker.deadline = None, float("inf")

    def _count_start_failure(self, worker: _Worker) -> None:
        """A worker that dies before it is ready means a broken installation, not a bad answer."""
        if worker.ready:
            return
        self._start_failures += 1
        if self._start_failures >= _MAX_START_FAILURES:
            raise RuntimeError(
                f"verifier worker processes exit while starting (exit code {worker.process.poll()}); "
                "check that math-verify imports: python -c 'import math_verify'"
            )

    def _expire(self, results: list[Outcome | None]) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None and now >= worker.deadline:
                results[worker.task[0]] = Outcome(False, worker.task[1], "timeout")
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
