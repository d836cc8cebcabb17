"""The answer verifier's pool: extraction in the caller, comparisons in worker processes under a timeout.

Extraction is linear-time and runs here; only the comparison (which may call sympy through
math-verify and stall on a pathological expression) goes to a worker. A comparison that
overruns its deadline ends as `reason="timeout"`, one whose worker dies as `reason="error"`
(see `rftt.workers` for how workers are replaced).
"""

from __future__ import annotations

import os
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
from rftt.verify.worker import command as worker_command
from rftt.workers import WorkerPool

DEFAULT_TIMEOUT_SECONDS = 5.0
_MAX_DEFAULT_WORKERS = 4


class VerifierPool:
    """Judges many predictions at once in worker processes; never raises on input, never hangs."""

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.size = workers or max(1, min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
        self.timeout = timeout
        self.pool = WorkerPool(lambda socket_fd: worker_command(socket_fd, timeout), self.size, "verifier")

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def check_many(
        self, predictions: Sequence[object], golds: Sequence[object], options: CheckOptions = CheckOptions()
    ) -> list[Outcome]:
        """One Outcome per (prediction, gold) pair, in order."""
        if len(predictions) != len(golds):
            raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
        results: list[Outcome | None] = [None] * len(predictions)
        pending: list[tuple[int, str]] = []
        payloads = []
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
                pending.append((index, extracted))
                payloads.append((extracted, gold_answer(gold_text), options.relative_tolerance,
                                 options.absolute_tolerance))
        for (index, extracted), result in zip(pending, self.pool.run(payloads, self.timeout)):
            if result.status == "done":
                results[index] = outcome_of_comparison(extracted, result.value)
            else:
                results[index] = Outcome(False, extracted, "timeout" if result.status == "timeout" else "error")
        return [outcome for outcome in results if outcome is not None]

    def close(self) -> None:
        """Stop every worker."""
        self.pool.close()
