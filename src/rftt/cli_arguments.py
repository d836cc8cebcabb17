"""How the `rftt` command's flags become stage configs: the dataset arguments, each job's flags (each sets one
config key), `--config`, `--set` and `--device`."""

from __future__ import annotations

import argparse
from typing import Any

from rftt.data import DatasetSpec, dataset_names

DEVICE_HELP = "auto (the GPU when there is one), cpu, cuda or cuda:N"
DATASET_FLAGS = {"dataset": "name", "path": "path", "split": "split", "limit": "limit", "size": "size", "seed": "seed",
                 "skip_bad": "skip_bad"}


def dataset_arguments(parser: argparse.ArgumentParser, default: str | None = None, optional: bool = False) -> None:
    parser.add_argument("dataset", nargs="?" if default or optional else None, default=default,
                        help=f"dataset name: {', '.join(dataset_names())}")
    parser.add_argument("--path", help="file or folder of a benchmark or json dataset")
    parser.add_argument("--split", help="split of a benchmark or hub dataset")
    parser.add_argument("--limit", type=int, help="keep only the first N problems")
    parser.add_argument("--size", type=int, help="number of problems of a generated dataset")
    parser.add_argument("--seed", type=int, help="seed of a generated dataset")
    parser.add_argument("--skip-bad", action="store_true", help="skip malformed rows (and report them)")


def job_arguments(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, type, str]],
                   dataset_section: str = "dataset") -> None:
    """Dataset arguments (into `dataset_section`), `--config`, `--set`, `--device`, and flags that each set one
    config key."""
    flags = {**flags, "device": ("device", str, DEVICE_HELP)}  # every job runs on a device
    dataset_arguments(parser, optional=True)
    parser.add_argument("--config", help="YAML recipe (see recipes/)")
    for flag, (_, kind, help_text) in flags.items():
        if kind is None:
            parser.add_argument(f"--{flag}", action="store_true", help=help_text)
        else:
            parser.add_argument(f"--{flag}", type=kind, help=help_text)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config setting, dotted, for example --set engine.max_batch_rows=32")
    parser.set_defaults(job_flags=flags, dataset_section=dataset_section)


def job_config(config_class: type, arguments: argparse.Namespace) -> Any:
    from rftt.config import load_config, set_dotted

    base: dict[str, Any] = {}
    keys = {attribute: f"{arguments.dataset_section}.{key}" for attribute, key in DATASET_FLAGS.items()}
    keys.update({flag.replace("-", "_"): key for flag, (key, _, _) in arguments.job_flags.items()})
    for attribute, key in keys.items():
        value = getattr(arguments, attribute, None)
        if value not in (None, False):
            set_dotted(base, key, value)
    return load_config(config_class, arguments.config, arguments.set, flags=base)


def dataset_spec(arguments: argparse.Namespace) -> DatasetSpec:
    """The DatasetSpec the dataset arguments describe."""
    return DatasetSpec(
        name=arguments.dataset, path=arguments.path, split=arguments.split, limit=arguments.limit,
        size=arguments.size, seed=arguments.seed, skip_bad=arguments.skip_bad,
    )


MODEL_FLAG = {"model": ("model", str, "model name, folder or hub id")}
OUTPUT_FLAG = {"output-dir": ("output_dir", str, "where the run's files go (re-run to resume)")}
ENGINE_FLAGS = {"engine": ("engine.kind", str, "hf, openai or vllm"),
                "base-url": ("engine.base_url", str, "server address for --engine openai")}
"""Flags several jobs share, each defined once."""

EVAL_FLAGS = {
    **MODEL_FLAG,
    "method": ("method", str, "greedy, maj@k (for example maj@8), rerank@k or tree"),
    "reranker": ("reranker", str, "for --method rerank@k: a trained reranker folder"),
    "rollouts": ("tree_rollouts", lambda text: [int(part) for part in text.split(",")],
                 "for --method tree: rollout counts to report, for example 1,4,16"),
    "template": ("template", str, "prompt template: chat, functional, reft, plain"),
    "max-new-tokens": ("max_new_tokens", int, "longest completion"),
    **OUTPUT_FLAG,
    **ENGINE_FLAGS,
}
SEARCH_FLAGS = {
    **MODEL_FLAG,
    "policy": ("policy", str, "prompted (phase 1) or token_guided (phase 2)"),
    "rollouts": ("search.rollouts", int, "rollouts per problem"),
    **OUTPUT_FLAG,
    **ENGINE_FLAGS,
}


SFT_FLAGS = {
    **MODEL_FLAG,
    "data": ("data.path", str, "an `rftt search` sft.jsonl file (data.source=search)"),
    "style": ("data.style", str, "functional, cot or program"),
    "lora-rank": ("lora.rank", int, "train a LoRA adapter of this rank instead of all weights"),
    "epochs": ("epochs", float, "passes over the data"),
    "max-steps": ("max_steps", int, "stop after this many optimizer steps"),
    "learning-rate": ("learning_rate", float, "peak learning rate"),
    "output-dir": ("output_dir", str, "where checkpoints, logs and the final model go"),
    "resume": ("resume", None, "continue from the last checkpoint in output_dir"),
}


RL_FLAGS = {
    "model": ("model", str, "start checkpoint (usually the SFT warm-up's final folder)"),
    "steps": ("steps", int, "RL steps"),
    "output-dir": ("output_dir", str, "where metrics, checkpoints and the final model go"),
    "resume": ("resume", None, "continue from the newest checkpoint in output_dir"),
}


RERANKER_FLAGS = {
    "model": ("model", str, "the policy whose backbone the classifier starts from"),
    "data": ("data", str, "problems.jsonl of an `rftt eval --method maj@k` run on training problems"),
    "output-dir": ("output_dir", str, "where the reranker goes"),
}
