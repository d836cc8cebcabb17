"""ReFT, program style, on SVAMP with the embedded model: SFT -> ReFT, each scored greedy, maj@8 and rerank@8.

Stages, each a folder under `--runs` that a rerun skips once finished (and resumes where the
stage resumes itself: evaluations skip finished problems, SFT and RL continue from their last
checkpoint), so an interrupted benchmark continues:

    sft                     recipes/sft_reft_svamp_program.yaml on the first --sft-problems programs
    <policy>-test-greedy    SVAMP test, the program each completion writes runs in the sandbox
    <policy>-train-maj8     8 samples on --reranker-problems training problems past the dev split
    <policy>-reranker       `rftt train-reranker` on those samples, labelled by the sandbox
    <policy>-test-rerank8   8 samples at T=0.7 per test problem (the first --sampled-limit): the reranker's best-scored valid answer
                            (rerank@8) and the majority vote over the programs' return values (maj@8),
                            both from the same samples
    rl                      recipes/reft_svamp_program.yaml from the SFT model for --rl-steps steps

for <policy> in sft and rl (with `--rl-reranker sft` the rl policy's samples are reranked by the sft
policy's reranker, and its train-maj8 and reranker stages are skipped). The figures (accuracy, 95%
interval, wall seconds per stage) go to bench/results/reft_svamp.json.

    RFTT_DATA=../shared/data python bench/reft_svamp.py --test-limit 300 --rl-steps 40
    RFTT_DATA=../shared/data python bench/reft_svamp.py --sft-problems 1000 --rl-steps 10 --test-limit 300 \
        --sampled-limit 100 --reranker-problems 100 --reranker-epochs 1 --rl-reranker sft   # ~2.5 CPU hours
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from rftt.config import load_config
from rftt.evaluate import PROBLEMS_FILE, SUMMARY_FILE, EvalConfig, evaluate, summarise
from rftt.jsonl import read_records
from rftt.train.reranker import RerankerConfig, train_reranker
from rftt.train.rl import RLConfig, run_rl
from rftt.train.sft import SFTConfig, run_sft

from common import peak_memory_mib, write_results

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FINISHED = "stage.json"


def run_stage(folder: Path, work: Callable[[], dict[str, Any]], seconds: dict[str, float]) -> dict[str, Any]:
    """Run a stage unless its folder records it finished; keep its wall time."""
    marker = folder / FINISHED
    if marker.exists():
        record = json.loads(marker.read_text())
    else:
        started = time.perf_counter()
        result = work()
        record = {"result": result, "seconds": round(time.perf_counter() - started, 1)}
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record, indent=2, default=str) + "\n")
    seconds[folder.name] = record["seconds"]
    print(f"{folder.name}: done in {record['seconds']:.0f} s", flush=True)
    return record["result"]


SCORES = ("problems", "accuracy", "accuracy_95_interval", "extraction_rate", "mean_completion_tokens")


def eval_stage(runs: Path, name: str, model: str, overrides: list[str], seconds: dict[str, float]) -> dict[str, Any]:
    config = load_config(EvalConfig, RECIPES / "eval_svamp_program.yaml",
                         [f"model={model}", f"output_dir={runs / name}", *overrides])
    run_stage(runs / name, lambda: evaluate(config), seconds)
    return json.loads((runs / name / SUMMARY_FILE).read_text())


def score_policy(runs: Path, policy: str, model: str, arguments: argparse.Namespace, seconds: dict[str, float],
                 reranker_of: str | None = None) -> dict[str, Any]:
    """Greedy, maj@8 and rerank@8 on SVAMP test for one policy, its reranker trained on its own samples
    (or, with `reranker_of`, the reranker already trained for that other policy)."""
    test = [f"dataset.limit={arguments.test_limit}"]
    greedy = eval_stage(runs, f"{policy}-test-greedy", model, test, seconds)
    if reranker_of is None:
        train = ["dataset.split=train_pot", "dataset.offset=100", f"dataset.limit={arguments.reranker_problems}",
                 "method=maj@8"]
        eval_stage(runs, f"{policy}-train-maj8", model, train, seconds)
        reranker = load_config(RerankerConfig, base={
            "model": model, "data": str(runs / f"{policy}-train-maj8" / "problems.jsonl"),
            "output_dir": str(runs / f"{policy}-reranker"), "epochs": arguments.reranker_epochs})
        run_stage(runs / f"{policy}-reranker", lambda: train_reranker(reranker), seconds)
    folder = runs / f"{policy}-test-rerank8"
    eval_stage(runs, folder.name, model, [f"dataset.limit={arguments.sampled_limit or arguments.test_limit}",
                                          "method=rerank@8",
                                          f"reranker={runs / f'{reranker_of or policy}-reranker' / 'final'}"], seconds)
    return {"greedy": {key: greedy[key] for key in SCORES},
            **sampled_scores(folder, arguments.sampled_limit or arguments.test_limit)}


def sampled_scores(folder: Path, limit: int) -> dict[str, dict[str, Any]]:
    """maj@8 and rerank@8 over the first `limit` problems of a rerank@8 run, both from the same 8 samples
    (a run over more problems, made before `--sampled-limit` was lowered, is cut to the same problems)."""
    summary = summarise(read_records(folder / PROBLEMS_FILE)[:limit], EvalConfig(method="rerank@8"))
    majority = {**summary, "accuracy": summary["majority_accuracy"],
                "accuracy_95_interval": summary["majority_accuracy_95_interval"]}
    return {method: {key: scores[key] for key in SCORES} for method, scores in (("maj@8", majority),
                                                                                ("rerank@8", summary))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/bench-reft-svamp")
    parser.add_argument("--sft-problems", type=int, default=3043, help="training programs for SFT (after the dev split)")
    parser.add_argument("--sft-epochs", type=float, default=1.0)
    parser.add_argument("--rl-steps", type=int, default=40)
    parser.add_argument("--test-limit", type=int, default=1000, help="SVAMP test problems scored")
    parser.add_argument("--reranker-problems", type=int, default=300)
    parser.add_argument("--reranker-epochs", type=float, default=2.0)
    parser.add_argument("--sampled-limit", type=int,
                        help="score maj@8 and rerank@8 on the first this many test problems (default: --test-limit)")
    parser.add_argument("--rl-reranker", choices=("own", "sft"), default="own",
                        help="rerank the ReFT policy's samples with a reranker of its own, or with the SFT policy's "
                             "(saves sampling the training problems and training a reranker again)")
    arguments = parser.parse_args()
    if not os.environ.get("RFTT_DATA"):
        parser.error("set RFTT_DATA to the benchmark data folder (../shared/data)")
    runs, seconds = Path(arguments.runs), {}
    sft = load_config(SFTConfig, RECIPES / "sft_reft_svamp_program.yaml", [
        f"data.dataset.limit={arguments.sft_problems}", f"epochs={arguments.sft_epochs}", f"output_dir={runs / 'sft'}",
        "resume=true"])
    run_stage(runs / "sft", lambda: run_sft(sft), seconds)
    results = {"sft": score_policy(runs, "sft", str(runs / "sft" / "final"), arguments, seconds)}
    rl = load_config(RLConfig, RECIPES / "reft_svamp_program.yaml", [
        f"model={runs / 'sft' / 'final'}", f"steps={arguments.rl_steps}", f"output_dir={runs / 'rl'}", "resume=true"])
    run_stage(runs / "rl", lambda: {"steps": len(run_rl(rl))}, seconds)
    results["reft"] = score_policy(runs, "rl", str(runs / "rl" / "final"), arguments, seconds,
                                   reranker_of="sft" if arguments.rl_reranker == "sft" else None)
    print(f"\n{'policy':<8}{'method':<10}{'accuracy':>10}  95% interval")
    for policy, scores in results.items():
        for method, row in scores.items():
            low, high = row["accuracy_95_interval"]
            print(f"{policy:<8}{method:<10}{row['accuracy']:>10.1%}  [{low:.1%}, {high:.1%}]")
    path = write_results("reft_svamp", {
        "settings": vars(arguments), "results": results, "stage_seconds": seconds,
        "total_cpu_minutes": round(sum(seconds.values()) / 60, 1), "peak_memory_mib": round(peak_memory_mib(), 1)})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
