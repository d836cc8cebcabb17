"""The answer verifier's pool: extraction and the fast path in the caller, other comparisons in workers.

Extraction is linear-time and runs here, and so do the comparisons that need no sympy (option
letters, two plain numbers; see `rftt.verify.judgement`). The rest (math-verify and sympy, which
may stall on a pathological expression) goes to a worker. A comparison that overruns its deadline
ends as `reason="timeout"`, one whose worker dies as `reason="error"` (see `rftt.workers` for how
workers are replaced).
"""

from __future__ import annotations

import os
from typing import Sequence

from rftt.verify.equivalence import is_choice_letter
from rftt.verify.extract import find_answer
from rftt.verify.judgement import Comparison, Verdict, quick_verdict
from rftt.verify.outcome import CheckOptions, Gold, Outcome, as_text, read_gold
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
        """One Outcome per (prediction, gold) pair, in order; a gold may be a `Gold` that names its format."""
        if len(predictions) != len(golds):
            raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
        results: list[Outcome | None] = [None] * len(predictions)
        pending: list[int] = []
        comparisons: list[Comparison] = []
        for index, (prediction, gold) in enumerate(zip(predictions, golds)):
            comparison = make_comparison(prediction, gold, options)
            if not comparison.gold.strip():  # nothing to compare with
                found = comparison.found.text if comparison.found else None
                results[index] = Outcome(False, found, "error" if found else "no_answer")
                continue
            verdict = quick_verdict(comparison)
            if verdict is not None:
                results[index] = _outcome(verdict)
            else:
                pending.append(index)
                comparisons.append(comparison)
        for index, comparison, result in zip(pending, comparisons, self.pool.run(comparisons, self.timeout)):
            if result.status == "done" and result.value is not None:
                results[index] = _outcome(result.value)
            else:
                extracted = comparison.found.text if comparison.found else None
                results[index] = Outcome(False, extracted, "timeout" if result.status == "timeout" else "error")
        return [outcome for outcome in results if outcome is not None]

    def close(self) -> None:
        """Stop every worker."""
        self.pool.close()


def make_comparison(prediction: object, gold: object, options: CheckOptions) -> Comparison:
    """The prediction's answer found and paired with its gold (an empty gold when there is none)."""
    gold_text, gold_format = (gold.text, gold.format) if isinstance(gold, Gold) else (as_text(gold) or "", "auto")
    text, gold_reading = as_text(prediction) or "", read_gold(gold_text, gold_format)
    found = find_answer(text, last_number_fallback=options.last_number_fallback,
                        multiple_choice=is_choice_letter(gold_reading.answer))
    return Comparison(text, found, gold_text, gold_reading.answer, gold_reading.whole, options)


def _outcome(verdict: Verdict) -> Outcome:
    """The Outcome of a verdict, its reason named."""
    if verdict.extracted is None:
        return Outcome(False, None, "no_answer")
    return Outcome(verdict.correct, verdict.extracted, "equal" if verdict.correct else "not_equal")
