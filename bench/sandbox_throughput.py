"""Program executor throughput on SVAMP's gold programs, each judged against its own answer.

Every gold program of svamp/train_pot.json runs in the sandbox (a fresh process per program,
with its time, memory and output limits) and its return value is checked against the
gold answer; all must be judged correct. SVAMP's gold answers are rounded loosely
(0.3333 / 2 is given as 0.165), so numbers are compared as ReFT compares SVAMP, within an
absolute 1e-2; the count judged correct with exact (relative 1e-6) comparison is reported
too. Reports programs/s for 1 worker and for the default pool, once the workers have started (their start,
which imports the allowed libraries, is reported apart).

    python bench/sandbox_throughput.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

from rftt.data import load_problems
from rftt.verify import check_many
from rftt.verify.programs import check_programs, returned_answers
from rftt.verify.sandbox import ProgramExecutor

from common import peak_memory_mib, write_results

SVAMP_ABSOLUTE_TOLERANCE = 1e-2
WARM_UP = "def solution():\n    return 1\n"


def run(problems, workers: int | None) -> dict:
    """Check every gold program with a pool of `workers`; the figures of that pass."""
    programs, golds = [problem.solution for problem in problems], [problem.answer for problem in problems]
    with ProgramExecutor(workers=workers) as executor:
        started = time.perf_counter()
        executor.run_many([WARM_UP] * executor.workers)  # starts the workers (they import the allowed libraries)
        start_seconds = time.perf_counter() - started
        started = time.perf_counter()
        outcomes, executions = check_programs(programs, golds, executor, absolute_tolerance=SVAMP_ABSOLUTE_TOLERANCE)
        seconds = time.perf_counter() - started
        pool_size = executor.workers
    exact = sum(outcome.correct for outcome in check_many(returned_answers(executions), golds, last_number_fallback=False))
    wrong = [problem.id for problem, outcome in zip(problems, outcomes) if not outcome.correct]
    reasons = Counter(result.reason if result is not None else "no program" for result in executions)
    return {"workers": pool_size, "programs": len(problems), "judged_correct": len(problems) - len(wrong),
            "judged_correct_exact_comparison": exact,
            "wrong_ids": wrong[:20], "reasons": dict(reasons), "start_seconds": round(start_seconds, 2),
            "seconds": round(seconds, 2),
            "programs_per_second": round(len(problems) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("RFTT_DATA"), required=not os.environ.get("RFTT_DATA"))
    parser.add_argument("--limit", type=int, default=None)
    arguments = parser.parse_args()
    problems = load_problems("svamp", path=str(Path(arguments.data) / "svamp"), split="train_pot", limit=arguments.limit)
    rows = [run(problems, 1), run(problems, None)]
    print(f"{'workers':>8}{'programs':>10}{'correct':>9}{'exact':>7}{'start s':>9}{'seconds':>9}{'programs/s':>12}  reasons")
    for row in rows:
        print(f"{row['workers']:>8}{row['programs']:>10}{row['judged_correct']:>9}"
              f"{row['judged_correct_exact_comparison']:>7}{row['start_seconds']:>9}{row['seconds']:>9}"
              f"{row['programs_per_second']:>12}  {row['reasons']}")
    path = write_results("sandbox_throughput", {
        "dataset": "svamp/train_pot.json", "absolute_tolerance": SVAMP_ABSOLUTE_TOLERANCE, "runs": rows,
        "pool_speedup": round(rows[1]["programs_per_second"] / rows[0]["programs_per_second"], 2),
        "peak_memory_mib": round(peak_memory_mib(), 1)})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
