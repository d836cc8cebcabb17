"""What each RL step works on and how its time is kept: the step's prompts and seed, fixed by
(seed, step) so a resumed run repeats them exactly, and the timer of its phases."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from rftt.data import Problem

PHASES = ("rollout", "reward", "logprobs", "advantages", "update", "evaluation", "checkpoint")


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def stamped(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """`metrics` with the seconds of each phase so far and their sum."""
        return {**metrics, "seconds": {phase: round(self.seconds.get(phase, 0.0), 3) for phase in PHASES},
                "step_seconds": round(sum(self.seconds.values()), 3)}


def problems_for_step(problems: Sequence[Problem], step: int, count: int, seed: int) -> list[Problem]:
    """The prompts of a step: consecutive slices of per-epoch shuffles, fixed by (seed, step)."""
    chosen = []
    for position in range(step * count, (step + 1) * count):
        epoch, index = divmod(position, len(problems))
        order = list(range(len(problems)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        chosen.append(problems[order[index]])
    return chosen


def step_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def step_fits_budget(elapsed: float, steps: int, budget_seconds: float) -> bool:
    """Whether one more step, taking the mean time of the `steps` done in `elapsed` seconds, ends within the budget:
    a wall-clock budget is a bound, so the run stops before the step that would cross it, not after."""
    return elapsed + elapsed / max(steps, 1) <= budget_seconds
