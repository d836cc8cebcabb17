"""Accuracy of the embedded model on GSM8K test and MAWPS MultiArith: greedy and maj@8.

Runs `rftt eval` (resumable, so an interrupted benchmark continues) on the first
`--limit` problems of each set and records accuracy, its 95% interval, extraction rate,
mean length and tokens/s per run.

    python bench/eval_embedded.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rftt.config import load_config
from rftt.evaluate import EvalConfig, evaluate

from common import peak_memory_mib, write_results

SETS = {"gsm8k": {"name": "gsm8k", "split": "test"}, "multiarith": {"name": "mawps", "split": "multiarith"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("RFTT_DATA"), required=not os.environ.get("RFTT_DATA"))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--methods", nargs="+", default=["greedy", "maj@8"])
    parser.add_argument("--template", default="chat")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--voting-max-new-tokens", type=int, default=None,
                        help="a shorter limit for maj@k (it samples k times as many tokens); default: --max-new-tokens")
    parser.add_argument("--batch-rows", type=int, default=64, help="rows per engine forward (engine.max_batch_rows)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="problems per saved batch (smaller: an interrupted run loses less)")
    parser.add_argument("--runs", default="runs/bench-eval", help="where the eval runs are kept (for resuming)")
    arguments = parser.parse_args()
    results = {}
    for method in arguments.methods:  # every set's greedy run first: they are the cheap ones
        for label, dataset in SETS.items():
            folder = {"gsm8k": "gsm8k", "multiarith": "mawps"}[label]
            voting = method != "greedy" and arguments.voting_max_new_tokens is not None
            max_new_tokens = arguments.voting_max_new_tokens if voting else arguments.max_new_tokens
            config = load_config(EvalConfig, base={
                "method": method, "template": arguments.template, "answer_check": {"last_number_fallback": True},
                "max_new_tokens": max_new_tokens,
                "batch_size": arguments.batch_size, "engine": {"max_batch_rows": arguments.batch_rows},
                "output_dir": str(Path(arguments.runs) / f"{label}-{method}"),
                "dataset": {**dataset, "path": str(Path(arguments.data) / folder), "limit": arguments.limit}})
            summary = evaluate(config)
            results[f"{label}/{method}"] = {"max_new_tokens": max_new_tokens} | {key: summary[key] for key in (
                "problems", "accuracy", "accuracy_95_interval", "extraction_rate", "accuracy_among_extracted",
                "sample_accuracy", "pass_at_k", "mean_completion_tokens", "truncated_fraction", "tokens_per_second")}
            print(label, method, results[f"{label}/{method}"], flush=True)
    path = write_results("eval_embedded", {"template": arguments.template, "batch_rows": arguments.batch_rows,
                                           "limit": arguments.limit, "results": results,
                                           "peak_memory_mib": round(peak_memory_mib(), 1)})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
