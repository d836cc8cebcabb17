"""Throughput of rftt.verify on gold solutions judged against their own gold answers.

GSM8K test: every gold solution (the raw `answer` field, `... #### N`) must be judged
equal to the answer the loader parsed. MATH-500: each reference solution's last
`\\boxed{}` against the dataset's `answer` field (most are textually equal, a fast path).
MATH-500 shifted: each answer against the next problem's answer, which forces the
full path (numbers, text, then math-verify) on realistic expressions.

    python bench/verify_throughput.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rftt.data import load_problems
from rftt.verify import VerifierPool

from common import peak_memory_mib, write_results


def raw_field(path: Path, field: str) -> list[str]:
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


def timed_check(pool: VerifierPool, predictions: list[str], golds: list[str]) -> tuple[list, float]:
    started = time.perf_counter()
    outcomes = pool.check_many(predictions, golds)
    return outcomes, time.perf_counter() - started


def summary(problems: list, outcomes: list, seconds: float) -> dict:
    """Counts, speed, and the problems not judged correct, for one set."""
    return {
        "answers": len(outcomes),
        "judged_correct": sum(outcome.correct for outcome in outcomes),
        "timeouts": sum(outcome.reason == "timeout" for outcome in outcomes),
        "seconds": round(seconds, 3),
        "answers_per_second": round(len(outcomes) / seconds, 1),
        "not_correct_first_10": [
            {"id": problem.id, "extracted": outcome.extracted, "gold": problem.answer, "reason": outcome.reason}
            for problem, outcome in zip(problems, outcomes) if not outcome.correct
        ][:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("RFTT_DATA"), required=not os.environ.get("RFTT_DATA"),
                        help="folder holding gsm8k/ and math500/ (default: $RFTT_DATA)")
    parser.add_argument("--workers", type=int, default=None)
    arguments = parser.parse_args()
    data = Path(arguments.data)

    gsm8k = load_problems("gsm8k", path=str(data / "gsm8k"), split="test")
    gsm8k_solutions = raw_field(data / "gsm8k" / "test.jsonl", "answer")
    math500 = load_problems("math500", path=str(data / "math500"))
    math500_solutions = [problem.solution for problem in math500]

    with VerifierPool(workers=arguments.workers) as pool:
        started = time.perf_counter()
        pool.check_many(["\\boxed{1}"], ["1"])
        start_seconds = time.perf_counter() - started
        gsm8k_outcomes, gsm8k_seconds = timed_check(pool, gsm8k_solutions, [p.answer for p in gsm8k])
        math_outcomes, math_seconds = timed_check(pool, math500_solutions, [p.answer for p in math500])
        shifted = [f"\\boxed{{{problem.answer}}}" for problem in math500[1:] + math500[:1]]
        shifted_outcomes, shifted_seconds = timed_check(pool, shifted, [p.answer for p in math500])
        workers = pool.size

    figures = {
        "workers": workers,
        "pool_start_seconds": round(start_seconds, 3),
        "gsm8k_test": summary(gsm8k, gsm8k_outcomes, gsm8k_seconds),
        "math500": summary(math500, math_outcomes, math_seconds),
        "math500_shifted": summary(math500, shifted_outcomes, shifted_seconds),
        "peak_memory_mib_parent": round(peak_memory_mib(), 1),
    }
    figures["math500_shifted"]["time_per_answer_vs_gsm8k_ratio"] = round(
        (shifted_seconds / len(shifted_outcomes)) / (gsm8k_seconds / len(gsm8k_outcomes)), 1)
    path = write_results("verify_throughput", figures)
    print(f"{'set':<16}{'answers':>8}{'correct':>9}{'seconds':>9}{'answers/s':>11}")
    for name in ("gsm8k_test", "math500", "math500_shifted"):
        row = figures[name]
        print(f"{name:<16}{row['answers']:>8}{row['judged_correct']:>9}{row['seconds']:>9}{row['answers_per_second']:>11}")
    print(f"workers {workers}, pool start {start_seconds:.2f} s; written to {path}")


if __name__ == "__main__":
    main()
