"""The `rftt` command: one sub-command per stage of the pipeline.

Long jobs (eval, search) take a typed config: defaults, then a YAML recipe (`--config`),
then their flags (`rftt.cli_arguments`), then `--set key.sub=value` overrides; unknown keys are errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

from rftt.cli_arguments import (
    DEVICE_HELP,
    EVAL_FLAGS,
    RERANKER_FLAGS,
    RL_FLAGS,
    SEARCH_FLAGS,
    SFT_FLAGS,
    dataset_arguments,
    dataset_spec,
    job_arguments,
    job_config,
)
from rftt.data import PRESETS, load_problems
from rftt.engine.protocol import API_KEY_ENVIRONMENT_VARIABLE, DEFAULT_REPLY_TOKENS
from rftt.errors import RfttError
from rftt.verify.outcome import GOLD_FORMATS


def command_data(arguments: argparse.Namespace) -> int:
    """Print a dataset's problems as JSON lines, and how many rows were skipped."""
    problems = load_problems(dataset_spec(arguments))
    if arguments.dataset in PRESETS:
        print(f"{arguments.dataset}: {PRESETS[arguments.dataset].description}", file=sys.stderr)
    for problem in problems[: arguments.show]:
        print(json.dumps(asdict(problem), ensure_ascii=False, default=str))
    print(f"{len(problems)} problems, {len(problems.skipped)} malformed rows skipped", file=sys.stderr)
    for error in problems.skipped[: arguments.show]:
        print(f"  skipped: {error}", file=sys.stderr)
    return 0


def command_verify(arguments: argparse.Namespace) -> int:
    """Judge one prediction (a stated answer, or with --program a `def solution():` run in the sandbox)
    against a gold answer and print the Outcome as JSON."""
    from rftt.verify import Gold
    from rftt.verify.judge import AnswerCheckConfig

    answer_check = AnswerCheckConfig("program" if arguments.program else "text", not arguments.no_last_number,
                                     arguments.tolerance)
    outcome = answer_check.judge([arguments.prediction], [Gold(arguments.gold, arguments.gold_format)])[0]
    print(json.dumps(asdict(outcome)))
    return 0 if outcome.correct else 1


def command_model(arguments: argparse.Namespace) -> int:
    """Load a model (converting the embedded one on first use) and describe it."""
    from rftt.models import load_model, resolve_checkpoint

    started = time.perf_counter()
    model, tokenizer = load_model(arguments.model)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "model": arguments.model,
        "checkpoint": resolve_checkpoint(arguments.model),
        "parameters": model.num_parameters(),
        "vocabulary": len(tokenizer),
        "embedding_rows": model.get_input_embeddings().num_embeddings,
        "tied_embeddings": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        "load_seconds": round(seconds, 2),
    }, indent=2))
    return 0


def command_tokens(arguments: argparse.Namespace) -> int:
    """Show the functional tokens, their ids in a model's tokenizer once added, and the move grammar."""
    from rftt.models import load_model
    from rftt.tokens import MOVE_DESCRIPTIONS, Move, add_functional_tokens, legal_next_moves

    model, tokenizer = load_model(arguments.model)
    tokens = add_functional_tokens(model, tokenizer)
    print(f"{'move':<14} {'opening id':>10} {'closing id':>10}  may follow with")
    for move in Move:
        following = ", ".join(next_move.value for next_move in legal_next_moves(move)) or "(terminal)"
        print(f"{move.value:<14} {tokens.opening_ids[move]:>10} {tokens.closing_ids[move]:>10}  {following}")
        print(f"{'':<14} {MOVE_DESCRIPTIONS[move]}")
    print(f"start -> {', '.join(move.value for move in legal_next_moves(None))}")
    return 0


def command_eval(arguments: argparse.Namespace) -> int:
    """Evaluate a model on a dataset with a method; resumable; prints and writes a summary."""
    from rftt.evaluate import EvalConfig, evaluate, format_summary

    config = job_config(EvalConfig, arguments)
    print(format_summary(evaluate(config)))
    print(f"written to {config.output_dir}")
    return 0


def command_search(arguments: argparse.Namespace) -> int:
    """Tree search on a dataset: trees, SFT data and a summary; resumable."""
    from rftt.search.runner import SearchRunConfig, run_search

    config = job_config(SearchRunConfig, arguments)
    summary = run_search(config)
    for key, value in summary.items():
        print(f"{key:<22}{value:.1f}" if isinstance(value, float) else f"{key:<22}{value}")
    print(f"written to {config.output_dir}")
    return 0


def command_sft(arguments: argparse.Namespace) -> int:
    """Supervised warm-up; writes a Hugging Face checkpoint to output_dir/final."""
    from rftt.train.sft import SFTConfig, run_sft

    if arguments.dataset:
        arguments.set.insert(0, "data.source=dataset")
    config = job_config(SFTConfig, arguments)
    summary = run_sft(config)
    for key, value in summary.items():
        print(f"{key:<24}{value:.4f}" if isinstance(value, float) else f"{key:<24}{value}")
    print(f"checkpoint: {config.output_dir}/final")
    return 0


RL_PRINTED_METRICS = ("step", "reward", "accuracy", "kl", "step_seconds")


def command_rl(arguments: argparse.Namespace) -> int:
    """Online RL (RFTT or ReFT, by recipe); metrics to metrics.jsonl, checkpoints, final model."""
    from rftt.train.rl import RLConfig, run_rl

    config = job_config(RLConfig, arguments)
    history = run_rl(config)
    for metrics in history[-3:]:  # without a KL term there is no kl metric
        print(json.dumps({key: metrics[key] for key in RL_PRINTED_METRICS if key in metrics}))
    print(f"final model: {config.output_dir}/final")
    return 0


def command_train_reranker(arguments: argparse.Namespace) -> int:
    """Train a correctness classifier on an eval run's labelled samples (for `rftt eval --method rerank@k`)."""
    from rftt.train.reranker import RerankerConfig, train_reranker

    config = job_config(RerankerConfig, arguments)
    print(json.dumps(train_reranker(config), indent=2))
    print(f"reranker: {config.output_dir}/final")
    return 0


def command_view(arguments: argparse.Namespace) -> int:
    """Write the HTML page of one tree of a search run."""
    from rftt.search.viewer import write_tree_page

    print(write_tree_page(arguments.run, arguments.problem, arguments.output))
    return 0


def command_serve(arguments: argparse.Namespace) -> int:
    """Serve a model behind the OpenAI-compatible API (or as a process reward model) until interrupted."""
    from rftt.search.process_rewards import ProcessRewardConfig
    from rftt.serve.app import serve

    api_key = arguments.api_key or os.environ.get(API_KEY_ENVIRONMENT_VARIABLE)
    prm = None
    if arguments.prm:
        prm = ProcessRewardConfig(kind="hf", step_tag=arguments.prm_step_tag, good_token=arguments.prm_good_token,
                                  bad_token=arguments.prm_bad_token)
    serve(arguments.prm or arguments.model, host=arguments.host, port=arguments.port, api_key=api_key,
          precision=arguments.precision, device=arguments.device, batch_window_seconds=arguments.batch_window_ms / 1000,
          reply_tokens=arguments.default_max_tokens, prm=prm)
    return 0


def command_demo(arguments: argparse.Namespace) -> int:
    """The whole RFTT pipeline on the embedded model (or any model and task), with a report; resumable."""
    from rftt.demo import demo_config, run_demo

    run_demo(demo_config(arguments.budget, arguments.config, arguments.set, demo_flags(arguments)),
             from_run=arguments.from_run)
    return 0


def demo_flags(arguments: argparse.Namespace) -> dict[str, Any]:
    """The demo settings the flags give; `--seed` and `--no-functional-tokens` also name the run folder."""
    from rftt.demo import budget_recipe, task_flags
    from rftt.demo_settings import ABLATION_SUFFIX

    flags: dict[str, Any] = task_flags(arguments.task) if arguments.task else {}
    for key in ("model", "seed", "output_dir"):
        if getattr(arguments, key) is not None:
            flags[key] = getattr(arguments, key)
    if arguments.output_dir is None and (arguments.seed is not None or arguments.no_functional_tokens):
        seed = f"-seed{arguments.seed}" if arguments.seed is not None else ""
        ablation = ABLATION_SUFFIX if arguments.no_functional_tokens else ""
        flags["output_dir"] = f"{budget_recipe(arguments.budget)['output_dir']}{seed}{ablation}"
    if arguments.no_functional_tokens:
        flags["functional_tokens"] = False
    if arguments.minutes is not None:
        flags["budget"] = {"minutes": arguments.minutes if arguments.minutes > 0 else None}
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rftt", description="Reinforced fine-tuning for reasoning: RFTT and ReFT.")
    commands = parser.add_subparsers(dest="command", required=True)
    from rftt.models import DEFAULT_MODEL as default_model

    data = commands.add_parser("data", help="load a dataset and print its problems")
    dataset_arguments(data)
    data.add_argument("--show", type=int, default=3, help="how many problems to print")
    data.set_defaults(handler=command_data)

    verify = commands.add_parser("verify", help="judge a prediction against a gold answer")
    verify.add_argument("prediction")
    verify.add_argument("gold")
    verify.add_argument("--no-last-number", action="store_true", help="do not fall back to the last number")
    verify.add_argument("--program", action="store_true",
                        help="the prediction is a `def solution():` program: run it in the sandbox, judge its value")
    verify.add_argument("--tolerance", type=float, default=0.0, help="absolute tolerance for numbers (SVAMP: 0.01)")
    verify.add_argument("--gold-format", choices=GOLD_FORMATS, default="auto",
                        help="value: the whole gold is the answer; latex: LaTeX text the answer is found in")
    verify.set_defaults(handler=command_verify)

    for name, handler, text in (("model", command_model, "load (and on first use convert) a model and describe it"),
                            ("tokens", command_tokens, "show the functional tokens and the move grammar")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("model", nargs="?", default=default_model)
        sub.set_defaults(handler=handler)

    evaluation = commands.add_parser("eval", help="evaluate a model on a dataset (greedy, maj@k, tree), resumable")
    job_arguments(evaluation, EVAL_FLAGS)
    evaluation.set_defaults(handler=command_eval)

    search = commands.add_parser("search", help="tree search: trees and SFT data for a dataset, resumable")
    job_arguments(search, SEARCH_FLAGS)
    search.set_defaults(handler=command_search)

    sft = commands.add_parser("sft", help="supervised warm-up (functional-token paths or gold solutions)")
    job_arguments(sft, SFT_FLAGS, dataset_section="data.dataset")
    sft.set_defaults(handler=command_sft)

    rl = commands.add_parser("rl", help="online RL: tree or sampled rollouts, REINFORCE++ / PPO-GAE / GRPO / RLOO")
    job_arguments(rl, RL_FLAGS)
    rl.set_defaults(handler=command_rl)

    reranker = commands.add_parser("train-reranker", help="train a reranker on labelled sampled solutions")
    job_arguments(reranker, RERANKER_FLAGS)
    reranker.set_defaults(handler=command_train_reranker)

    view = commands.add_parser("view", help="write the HTML page of a search tree")
    view.add_argument("run", help="a search run folder (or its trees.jsonl)")
    view.add_argument("--problem", help="problem id (default: the first tree)")
    view.add_argument("--output", help="HTML file to write (default: in the run folder)")
    view.set_defaults(handler=command_view)

    serve = commands.add_parser("serve", help="serve a model behind the OpenAI-compatible completions API")
    serve.add_argument("--model", default=default_model)
    serve.add_argument("--prm", metavar="MODEL", help="serve this model as a process reward model instead")
    serve.add_argument("--prm-step-tag", default=" ки", help="token placed after each step (Math-Shepherd: ' ки')")
    serve.add_argument("--prm-good-token", default="+")
    serve.add_argument("--prm-bad-token", default="-")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help=f"require this bearer key (or set ${API_KEY_ENVIRONMENT_VARIABLE})")
    serve.add_argument("--precision", "--dtype", default="auto", dest="precision",
                       help="the weights' precision: auto (as stored), fp32, bf16, fp16 or native (--dtype: its old name)")
    serve.add_argument("--batch-window-ms", type=float, default=10.0,
                       help="how long to wait for concurrent requests to batch together")
    serve.add_argument("--device", default="auto", help=DEVICE_HELP)
    serve.add_argument("--default-max-tokens", type=int, default=DEFAULT_REPLY_TOKENS,
                       help="a chat reply's length limit when a request sets none")
    serve.set_defaults(handler=command_serve)

    demo = commands.add_parser("demo", help="the whole RFTT pipeline on the embedded model, with an HTML report")
    demo.add_argument("--budget", default="default", help="default, or small: the same stages on fewer problems and steps")
    demo.add_argument("--task", help="any registered dataset (default: arithmetic, the reference task); "
                           "benchmarks use train/test")
    demo.add_argument("--model", help="start model: name, folder or hub id (default: the embedded model)")
    demo.add_argument("--minutes", type=float,
                      help="wall-time budget: stages are sized to it on this machine (default 25; 0: the recipe's "
                           "sizes as they are)")
    demo.add_argument("--seed", type=int, help="seed of every stage (the run folder gets a -seedN suffix)")
    demo.add_argument("--output-dir", help="run folder (re-run the same command to continue)")
    demo.add_argument("--no-functional-tokens", action="store_true",
                      help="the ablation: step tags stay plain text, not new vocabulary (the run folder gets a "
                           "-no-functional-tokens suffix; the reports of the pair show both)")
    demo.add_argument("--from-run", metavar="RUN",
                      help="a finished demo run: a new run takes its stages that ran with the same settings, up to "
                           "the first that differs (for example a new RL on the same warm-up)")
    demo.add_argument("--config", help="YAML recipe on top of the budget's settings")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any demo setting, dotted, for example --set rl.steps=20")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = arguments.handler
    try:
        return handler(arguments)
    except RfttError as error:
        print(f"rftt {arguments.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
