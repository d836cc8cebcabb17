"""Batched tree search against the released design (one tree, one rollout, one engine call per node).

Both run phase-1 prompted search with the embedded model on arithmetic problems with the
same budget per problem (rollouts, step length); the figure is nodes written per second,
as a ratio. The batched search streams steps through the engine (new steps join the
running batch as earlier ones finish); the released design waits for each node's call.
One call per node costs about the same per node on any number of problems, so it runs
on the first `--baseline-problems` of them (both counts are recorded). The search's
generated tokens/s is also given as a fraction of the engine's best batched tokens/s
(64 prompts x 128 tokens), measured in the same run.

    python bench/search_throughput.py
"""

from __future__ import annotations

import argparse
import time

from rftt.data import load_problems
from rftt.engine import Engine, SamplingParams, make_engine
from rftt.models import DEFAULT_MODEL, load_model
from rftt.prompts import get_template
from rftt.search import OutcomeScorer, PromptedPolicy, SearchConfig, TreeSearch
from rftt.tokens import Move

from common import peak_memory_mib, write_results

ENGINE_BATCH, ENGINE_TOKENS = 64, 128


class CountingEngine(Engine):
    """The real engine behind the default (one `generate` call per batch) stream, counting those calls."""

    def __init__(self, engine: Engine):
        self.engine, self.calls = engine, 0

    def generate(self, prompts, params):
        self.calls += 1
        return self.engine.generate(prompts, params)

    def next_token_logprobs(self, prefixes, candidate_token_ids):
        return self.engine.next_token_logprobs(prefixes, candidate_token_ids)


def run(engine: Engine, tokenizer, problems, config: SearchConfig, max_tokens: int) -> dict:
    policy = PromptedPolicy(engine, tokenizer, seed=0, max_tokens={move: max_tokens for move in Move})
    search = TreeSearch(policy, OutcomeScorer(), config)
    trees = search.run(problems)
    statistics = search.statistics
    return {"nodes": statistics.nodes_written, "generated_tokens": statistics.generated_tokens,
            "engine_calls": engine.calls if isinstance(engine, CountingEngine) else None,
            "admissions_into_a_running_batch": getattr(engine, "refills", None), "seconds": round(statistics.seconds, 1),
            "nodes_per_second": round(statistics.nodes_per_second, 3),
            "tokens_per_second": round(statistics.generated_tokens / statistics.seconds, 1),
            "solved": sum(any(node.correct for node in tree.nodes) for tree in trees)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--baseline-problems", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--trees-at-once", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per step")
    parser.add_argument("--prefix-cache-mib", type=int, default=0, help="the engine's cross-call prefix cache")
    arguments = parser.parse_args()

    model, tokenizer = load_model(DEFAULT_MODEL)
    model.eval()
    engine = make_engine("hf", model=model, tokenizer=tokenizer, prefix_cache_mib=arguments.prefix_cache_mib)
    problems = load_problems("arithmetic", size=arguments.problems, seed=1)

    prompts = [get_template("chat").render(problem.question, tokenizer)
               for problem in load_problems("arithmetic", size=ENGINE_BATCH, seed=2)]
    started = time.perf_counter()
    engine.generate(prompts, SamplingParams(max_new_tokens=ENGINE_TOKENS, ignore_eos=True))
    engine_best = ENGINE_BATCH * ENGINE_TOKENS / (time.perf_counter() - started)

    batched = run(engine, tokenizer, problems, SearchConfig(rollouts=arguments.rollouts, parallel_rollouts=4,
                                                            trees_at_once=arguments.trees_at_once), arguments.max_tokens)
    print("batched", batched, flush=True)
    released = run(CountingEngine(engine), tokenizer, problems[: arguments.baseline_problems],
                   SearchConfig(rollouts=arguments.rollouts, parallel_rollouts=1, trees_at_once=1, max_batch=1),
                   arguments.max_tokens)
    print("one call per node", released, flush=True)

    figures = {
        "model": DEFAULT_MODEL, "problems": len(problems), "baseline_problems": arguments.baseline_problems,
        "rollouts": arguments.rollouts, "trees_at_once": arguments.trees_at_once,
        "max_tokens_per_step": arguments.max_tokens, "prefix_cache_mib": arguments.prefix_cache_mib,
        "batched": batched, "one_call_per_node": released,
        "nodes_per_second_ratio": round(batched["nodes_per_second"] / released["nodes_per_second"], 2),
        "engine_best_tokens_per_second": round(engine_best, 1),
        "search_tokens_per_second_fraction_of_engine_best": round(batched["tokens_per_second"] / engine_best, 3),
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }
    path = write_results("search_throughput", figures)
    print(f"\n{'search':<20}{'nodes':>7}{'calls':>7}{'seconds':>9}{'nodes/s':>9}{'tokens/s':>10}")
    for name, row in (("batched", batched), ("one call per node", released)):
        print(f"{name:<20}{row['nodes']:>7}{row['engine_calls'] or 'stream':>7}{row['seconds']:>9}{row['nodes_per_second']:>9}"
              f"{row['tokens_per_second']:>10}")
    print(f"nodes/s ratio {figures['nodes_per_second_ratio']}x; search tokens/s = "
          f"{figures['search_tokens_per_second_fraction_of_engine_best']} of the engine's best "
          f"({figures['engine_best_tokens_per_second']} tokens/s); written to {path}")


if __name__ == "__main__":
    main()
