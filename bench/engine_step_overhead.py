"""The hf engine's work per decoding step outside the model, against `model.generate`, where that work is most of
a step: a randomly initialised 2-layer, 64-wide Llama with the embedded model's 49,152-token vocabulary. On a GPU
a small model's kernels take microseconds and what the engine does between them (its host syncs above all) decides
the ratio (issue 25 measured 0.91 at batch 16 on an H200); this is the stand-in a CPU machine can measure.

Greedy, exactly 128 new tokens per row; engine and `model.generate` timed alternately in one run, best of
`--repeats`. `--label` keeps each run beside earlier ones in the results file, so two versions of the engine
compare, run in turn on the same machine:

    for i in 1 2 3; do
      PYTHONPATH=/tmp/rftt-before/src python bench/engine_step_overhead.py --label before-$i
      python bench/engine_step_overhead.py --label after-$i
    done
"""

from __future__ import annotations

import argparse
import statistics

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import rftt
from rftt.engine import make_engine
from rftt.engine.factory import load_tokenizer
from rftt.models import DEFAULT_MODEL

from common import earlier_runs, peak_memory_mib, write_results
from engine_throughput import NEW_TOKENS, time_engine, time_model_generate

NAME = "engine_step_overhead"


def tiny_model(vocabulary: int) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocabulary, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def median_ratios(runs: dict) -> dict:
    """Per batch, the median engine/generate ratio of the runs labelled before-* and after-*."""
    table: dict[str, dict[str, float]] = {}
    for prefix in ("before", "after"):
        for batch in {batch for run in runs.values() for batch in run["batches"]}:
            ratios = [run["batches"][batch]["ratio_engine_to_generate"] for label, run in runs.items()
                      if label.startswith(prefix) and batch in run["batches"]]
            if ratios:
                table.setdefault(batch, {})[prefix] = round(statistics.median(ratios), 3)
    return dict(sorted(table.items(), key=lambda item: int(item[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default=None, help="keep this run beside earlier labelled ones (before-1, after-1)")
    arguments = parser.parse_args()

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    model = tiny_model(len(tokenizer))
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    prompts = [f"Question: what is {index} + {3 * index}? Think step by step." for index in range(max(arguments.batches))]
    time_engine(engine, prompts[:2])
    time_model_generate(model, tokenizer, prompts[:2])
    batches = {}
    for batch in arguments.batches:
        ours, theirs = [], []
        for _ in range(arguments.repeats):
            theirs.append(time_model_generate(model, tokenizer, prompts[:batch]))
            ours.append(time_engine(engine, prompts[:batch]))
        batches[str(batch)] = {"engine_tokens_per_second": round(batch * NEW_TOKENS / min(ours), 1),
                               "generate_tokens_per_second": round(batch * NEW_TOKENS / min(theirs), 1),
                               "ratio_engine_to_generate": round(min(theirs) / min(ours), 3)}
        print(batch, batches[str(batch)], flush=True)
    run = {"rftt_source": rftt.__file__, "threads": torch.get_num_threads(), "batches": batches,
           "peak_memory_mib": round(peak_memory_mib(), 1)}
    runs = {**earlier_runs(NAME, arguments.label), arguments.label or "latest": run}
    path = write_results(NAME, {"new_tokens": NEW_TOKENS, "repeats": arguments.repeats,
                                "median_ratio_engine_to_generate": median_ratios(runs), "runs": runs}, indent=None)
    print(f"median engine/generate ratio per batch: {median_ratios(runs)}; written to {path}")


if __name__ == "__main__":
    main()
