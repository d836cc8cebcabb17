"""rftt's answer verification against math-verify's on hand-written judgement cases.

Each case of tests/data/verify_cases.yaml (written here: a gold as a dataset stores it, its format,
a model's output, and a careful grader's judgement) is judged by `rftt.verify` and by math-verify's
own `verify(parse(gold), parse(prediction))`; a bare-value gold is given to math-verify both as it
is and inside `$...$` (its documented way to pass LaTeX), and math-verify is credited with the
better of the two. Prints agreement per kind and writes bench/results/verify_accuracy.json.

    python bench/verify_accuracy.py
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from rftt.verify import Gold, VerifierPool

from common import peak_memory_mib, write_results

CASES = Path(__file__).resolve().parents[1] / "tests" / "data" / "verify_cases.yaml"
POLICY_KINDS = ("multiple_choice", "unfinished")
"""Kinds where the two differ by design, not by reading: math-verify's default `parse` reads no option
letters, and rftt does not count an expression still to compute (`2 + -1`) as a final answer."""


def math_verify_judgements(cases: list[dict[str, Any]], wrap_values: bool) -> list[bool]:
    """math-verify's verdict on each case, its gold read as written (or inside `$...$` for bare values)."""
    from math_verify import parse, verify

    judgements = []
    for case in cases:
        gold = f"${case['gold']}$" if wrap_values and case["gold_format"] == "value" else case["gold"]
        try:
            judgements.append(bool(verify(parse(gold), parse(case["prediction"]))))
        except Exception:  # a crash is a wrong judgement, not the end of the benchmark
            judgements.append(False)
    return judgements


def agreement(cases: list[dict[str, Any]], judgements: list[bool]) -> dict[str, Any]:
    """Cases judged as the grader did, overall and per kind."""
    right = [judgement == case["expected"] for case, judgement in zip(cases, judgements)]
    per_kind: Counter[str] = Counter()
    for case, ok in zip(cases, right):
        per_kind[case["kind"]] += ok
    outside_policy = sum(ok for case, ok in zip(cases, right) if case["kind"] not in POLICY_KINDS)
    return {"agree": sum(right), "agree_outside_policy_kinds": outside_policy, "per_kind": dict(per_kind),
            "false_accepts": sum(judgement and not case["expected"] for case, judgement in zip(cases, judgements)),
            "false_rejects": sum(case["expected"] and not judgement for case, judgement in zip(cases, judgements))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=Path, default=CASES)
    arguments = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = yaml.safe_load(arguments.cases.read_text())

    started = time.perf_counter()
    with VerifierPool() as pool:
        outcomes = pool.check_many([case["prediction"] for case in cases],
                                   [Gold(case["gold"], case["gold_format"]) for case in cases])
    rftt_seconds = time.perf_counter() - started
    started = time.perf_counter()
    as_written = math_verify_judgements(cases, wrap_values=False)
    wrapped = math_verify_judgements(cases, wrap_values=True)
    math_verify_seconds = (time.perf_counter() - started) / 2

    results = {"rftt": agreement(cases, [outcome.correct for outcome in outcomes]),
               "math_verify_gold_as_written": agreement(cases, as_written),
               "math_verify_value_gold_in_dollars": agreement(cases, wrapped)}
    best_math_verify = max(results["math_verify_gold_as_written"]["agree"],
                           results["math_verify_value_gold_in_dollars"]["agree"])
    kinds = Counter(case["kind"] for case in cases)
    print(f"{'kind':<22}{'cases':>6}{'rftt':>6}{'mv':>6}{'mv $':>6}")
    for kind, count in kinds.items():
        print(f"{kind:<22}{count:>6}" + "".join(f"{results[name]['per_kind'].get(kind, 0):>6}" for name in results))
    print(f"{'all':<22}{len(cases):>6}" + "".join(f"{results[name]['agree']:>6}" for name in results))
    outside = sum(case["kind"] not in POLICY_KINDS for case in cases)
    print(f"{'other kinds':<22}{outside:>6}"
          + "".join(f"{results[name]['agree_outside_policy_kinds']:>6}" for name in results))
    disagreements = [
        {"index": index, "kind": case["kind"], "gold": case["gold"], "prediction": case["prediction"][-120:],
         "expected": case["expected"], "rftt": outcome.correct, "extracted": outcome.extracted, "reason": outcome.reason,
         "known_miss": case.get("known_miss")}
        for index, (case, outcome) in enumerate(zip(cases, outcomes)) if outcome.correct != case["expected"]]
    for row in disagreements:
        print(f"rftt differs from the grader on #{row['index']} ({row['kind']}): {row}")
    write_results("verify_accuracy", {
        "cases": len(cases), "cases_per_kind": dict(kinds), **results,
        "rftt_at_least_math_verify": results["rftt"]["agree"] >= best_math_verify,
        "rftt_seconds": round(rftt_seconds, 3), "math_verify_seconds_per_pass": round(math_verify_seconds, 3),
        "rftt_disagreements": disagreements, "peak_memory_mib": round(peak_memory_mib(), 1)})


if __name__ == "__main__":
    main()
