"""Throughput of rftt.verify, and gold solutions judged against their own gold answers.

GSM8K test: every gold solution (the raw `answer` field, `... #### N`) must be judged
equal to the answer the loader parsed. Plain numbers: the answers a model writes on
GSM8K-style tasks (`<output>N</output>`, "The answer is N.", `\\boxed{N}`, `#### N`), each
right and off by one, against the GSM8K golds. MATH-500: each reference solution's
last `\\boxed{}` against the dataset's `answer` field. MATH-500 shifted: each answer
against the next problem's answer, which forces the full path (math-verify) on
realistic expressions. Pathological: a tower of powers, which must end within the timeout.

`--label` keeps each run beside earlier ones in the results file, so two versions of
rftt can be timed alternately on one machine (the older one through PYTHONPATH):

    git worktree add /tmp/rftt-before <commit>
    for i in 1 2 3; do
      PYTHONPATH=/tmp/rftt-before/src python bench/verify_throughput.py --data ../shared/data --label before-$i
      python bench/verify_throughput.py --data ../shared/data --label after-$i
    done
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import rftt
from rftt.data import load_problems
from rftt.verify import VerifierPool

from common import earlier_runs, peak_memory_mib, write_results

PLAIN_FORMATS = ("<output>{}</output>", "The answer is {}.", "\\boxed{{{}}}", "#### {}")
PATHOLOGICAL = ("Let us see: $2^{2^{2^{2^{30}}}}$", "\\sqrt{2}")
SETS = ("gsm8k_test", "plain_numbers", "math500", "math500_shifted")


def raw_field(path: Path, field: str) -> list[str]:
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


def plain_number_answers(golds: list[str]) -> tuple[list[str], list[str], list[bool]]:
    """Each gold written in each plain format, once right and once off by one, with which are right."""
    predictions, expected_golds, right = [], [], []
    for gold in golds:
        for template in PLAIN_FORMATS:
            predictions += [template.format(gold), template.format(int(float(gold)) + 1)]
            expected_golds += [gold, gold]
            right += [True, False]
    return predictions, expected_golds, right


def timed_check(pool: VerifierPool, predictions: list[str], golds: list[str]) -> tuple[list, float]:
    started = time.perf_counter()
    outcomes = pool.check_many(predictions, golds)
    return outcomes, time.perf_counter() - started


def summary(outcomes: list, seconds: float, right: list[bool] | None, ids: list[str], golds: list[str]) -> dict:
    """Counts, speed, and the first answers judged otherwise than they should be (when that is known)."""
    return {
        "answers": len(outcomes),
        "judged_correct": sum(outcome.correct for outcome in outcomes),
        "should_be_correct": sum(right) if right is not None else None,
        "timeouts": sum(outcome.reason == "timeout" for outcome in outcomes),
        "seconds": round(seconds, 3),
        "answers_per_second": round(len(outcomes) / seconds, 1),
        "misjudged_first_5": [
            {"id": ids[index], "extracted": outcome.extracted, "gold": golds[index], "reason": outcome.reason}
            for index, outcome in enumerate(outcomes) if right is not None and outcome.correct != right[index]
        ][:5],
    }


def ratios(runs: dict) -> dict:
    """Median answers/s of runs labelled after-* over before-*, per set (when both kinds are there)."""
    def median_rate(prefix: str, name: str) -> float | None:
        rates = [run[name]["answers_per_second"] for label, run in runs.items() if label.startswith(prefix)
                 and name in run]
        return statistics.median(rates) if rates else None

    result = {}
    for name in SETS:
        before, after = median_rate("before", name), median_rate("after", name)
        if before and after:
            result[name] = round(after / before, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("RFTT_DATA"), required=not os.environ.get("RFTT_DATA"),
                        help="folder holding gsm8k/ and math500/ (default: $RFTT_DATA)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--label", default=None, help="keep this run beside earlier labelled ones (before-1, after-1)")
    arguments = parser.parse_args()
    data = Path(arguments.data)

    gsm8k = load_problems("gsm8k", path=str(data / "gsm8k"), split="test")
    gsm8k_golds = [problem.answer for problem in gsm8k]
    math500 = load_problems("math500", path=str(data / "math500"))
    math500_golds = [problem.answer for problem in math500]
    plain, plain_golds, plain_right = plain_number_answers(gsm8k_golds)
    gsm8k_ids, math500_ids = [problem.id for problem in gsm8k], [problem.id for problem in math500]
    sets = {
        "gsm8k_test": (raw_field(data / "gsm8k" / "test.jsonl", "answer"), gsm8k_golds, [True] * len(gsm8k),
                       gsm8k_ids),
        "plain_numbers": (plain, plain_golds, plain_right, [str(index) for index in range(len(plain))]),
        "math500": ([problem.solution for problem in math500], math500_golds, [True] * len(math500), math500_ids),
        "math500_shifted": ([f"\\boxed{{{gold}}}" for gold in math500_golds[1:] + math500_golds[:1]], math500_golds,
                            None, math500_ids),
    }

    run: dict = {"rftt_source": str(Path(rftt.__file__).parent)}
    with VerifierPool(workers=arguments.workers) as pool:
        started = time.perf_counter()
        pool.check_many(["\\boxed{1}"], ["1"])
        run["pool_start_seconds"] = round(time.perf_counter() - started, 3)
        for name, (predictions, golds, right, ids) in sets.items():
            outcomes, seconds = timed_check(pool, predictions, golds)
            run[name] = summary(outcomes, seconds, right, ids, golds)
        [outcome], seconds = timed_check(pool, [PATHOLOGICAL[0]], [PATHOLOGICAL[1]])
        run["pathological"] = {"seconds": round(seconds, 2), "reason": outcome.reason, "timeout": pool.timeout}
        run["workers"] = pool.size
    run["peak_memory_mib_parent"] = round(peak_memory_mib(), 1)

    runs = {**earlier_runs("verify_throughput", arguments.label), arguments.label or "latest": run}
    path = write_results("verify_throughput", {"after_over_before_answers_per_second": ratios(runs), "runs": runs},
                         indent=None)
    print(f"{'set':<16}{'answers':>8}{'correct':>9}{'should':>8}{'seconds':>9}{'answers/s':>11}")
    for name in SETS:
        row = run[name]
        print(f"{name:<16}{row['answers']:>8}{row['judged_correct']:>9}{str(row['should_be_correct']):>8}"
              f"{row['seconds']:>9}{row['answers_per_second']:>11}")
    print(f"pathological: {run['pathological']}; workers {run['workers']}; rftt from {run['rftt_source']}")
    print(f"after/before answers/s: {ratios(runs)}; written to {path}")


if __name__ == "__main__":
    main()
