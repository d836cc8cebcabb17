"""The `rftt` command: one sub-command per stage of the pipeline."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Callable, Sequence

from rftt.data import DatasetSpec, dataset_names, load_problems
from rftt.errors import RfttError
from rftt.serve.protocol import API_KEY_ENVIRONMENT_VARIABLE


def _dataset_arguments(parser: argparse.ArgumentParser, default: str | None = None, optional: bool = False) -> None:
    parser.add_argument("dataset", nargs="?" if default or optional else None, default=default,
                        help=f"dataset name: {', '.join(dataset_names())}")
    parser.add_argument("--path", help="file or folder of a benchmark or json dataset")
    parser.add_argument("--split", help="split of a benchmark or hub dataset")
    parser.add_argument("--limit", type=int, help="keep only the first N problems")
    parser.add_argument("--size", type=int, help="number of problems of a generated dataset")
    parser.add_argument("--seed", type=int, help="seed of a generated dataset")
    parser.add_argument("--skip-bad", action="store_true", help="skip malformed rows (and report them)")


def dataset_spec(arguments: argparse.Namespace) -> DatasetSpec:
    """The DatasetSpec the dataset arguments describe."""
    return DatasetSpec(
        name=arguments.dataset, path=arguments.path, split=arguments.split, limit=arguments.limit,
        size=arguments.size, seed=arguments.seed, skip_bad=arguments.skip_bad,
    )


def command_data(arguments: argparse.Namespace) -> int:
    """Print a dataset's problems as JSON lines, and how many rows were skipped."""
    problems = load_problems(dataset_spec(arguments))
    for problem in problems[: arguments.show]:
        print(json.dumps(asdict(problem), ensure_ascii=False, default=str))
    print(f"{len(problems)} problems, {len(problems.skipped)} malformed rows skipped", file=sys.stderr)
    for error in problems.skipped[: arguments.show]:
        print(f"  skipped: {error}", file=sys.stderr)
    return 0


def command_verify(arguments: argparse.Namespace) -> int:
    """Judge one prediction against a gold answer and print the Outcome as JSON."""
    from rftt.verify import check

    outcome = check(arguments.prediction, arguments.gold, last_number_fallback=not arguments.no_last_number)
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
    from rftt.config import load_config
    from rftt.evaluate import EvalConfig, evaluate, format_summary

    flags = {
        "model": arguments.model, "method": arguments.method, "template": arguments.template,
        "max_new_tokens": arguments.max_new_tokens, "output_dir": arguments.output_dir,
        "dataset": {key: value for key, value in {
            "name": arguments.dataset, "path": arguments.path, "split": arguments.split, "limit": arguments.limit,
            "size": arguments.size, "seed": arguments.seed, "skip_bad": arguments.skip_bad or None}.items()
            if value is not None},
        "engine": {key: value for key, value in {"kind": arguments.engine, "base_url": arguments.base_url}.items()
                   if value is not None},
    }
    config = load_config(EvalConfig, arguments.config, arguments.set,
                         base={key: value for key, value in flags.items() if value not in (None, {})})
    summary = evaluate(config)
    print(format_summary(summary))
    print(f"written to {config.output_dir}")
    return 0


def command_serve(arguments: argparse.Namespace) -> int:
    """Serve a model behind the OpenAI-compatible API until interrupted."""
    from rftt.serve.app import serve

    api_key = arguments.api_key or os.environ.get(API_KEY_ENVIRONMENT_VARIABLE)
    serve(arguments.model, host=arguments.host, port=arguments.port, api_key=api_key, dtype=arguments.dtype,
          batch_window_seconds=arguments.batch_window_ms / 1000)
    return 0


def command_demo(arguments: argparse.Namespace) -> int:
    from rftt.demo import run_demo

    return run_demo(model_name=arguments.model, spec=dataset_spec(arguments), max_new_tokens=arguments.max_new_tokens,
                    batch_size=arguments.batch_size)


def build_parser() -> argparse.ArgumentParser:
    from rftt.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="rftt", description="Reinforced fine-tuning for reasoning: RFTT and ReFT.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load a dataset and print its problems")
    _dataset_arguments(data)
    data.add_argument("--show", type=int, default=3, help="how many problems to print")
    data.set_defaults(run=command_data)

    verify = commands.add_parser("verify", help="judge a prediction against a gold answer")
    verify.add_argument("prediction")
    verify.add_argument("gold")
    verify.add_argument("--no-last-number", action="store_true", help="do not fall back to the last number")
    verify.set_defaults(run=command_verify)

    model = commands.add_parser("model", help="load (and on first use convert) a model and describe it")
    model.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    model.set_defaults(run=command_model)

    tokens = commands.add_parser("tokens", help="show the functional tokens and the move grammar")
    tokens.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    tokens.set_defaults(run=command_tokens)

    evaluation = commands.add_parser("eval", help="evaluate a model on a dataset (greedy or maj@k), resumable")
    _dataset_arguments(evaluation, default=None, optional=True)
    evaluation.add_argument("--config", help="YAML file of EvalConfig settings")
    evaluation.add_argument("--model")
    evaluation.add_argument("--method", help="greedy or maj@k, for example maj@8")
    evaluation.add_argument("--template", help="prompt template: chat, functional, reft, plain")
    evaluation.add_argument("--max-new-tokens", type=int)
    evaluation.add_argument("--output-dir")
    evaluation.add_argument("--engine", choices=["hf", "openai", "vllm"])
    evaluation.add_argument("--base-url", help="server address for --engine openai")
    evaluation.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="any EvalConfig setting, dotted: --set temperature=0.8 --set engine.max_batch_rows=32")
    evaluation.set_defaults(run=command_eval)

    serve = commands.add_parser("serve", help="serve a model behind the OpenAI-compatible completions API")
    serve.add_argument("--model", default=DEFAULT_MODEL)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help=f"require this bearer key (or set ${API_KEY_ENVIRONMENT_VARIABLE})")
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--batch-window-ms", type=float, default=10.0,
                       help="how long to wait for concurrent requests to batch together")
    serve.set_defaults(run=command_serve)

    demo = commands.add_parser("demo", help="the pipeline so far on the embedded model")
    _dataset_arguments(demo, default="arithmetic")
    demo.add_argument("--model", default=DEFAULT_MODEL)
    demo.add_argument("--max-new-tokens", type=int, default=96)
    demo.add_argument("--batch-size", type=int, default=16)
    demo.set_defaults(run=command_demo, size=None, limit=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = arguments.run
    try:
        return run(arguments)
    except RfttError as error:
        print(f"rftt {arguments.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
