"""`rftt eval`: model x dataset x method -> one JSON line per problem, a summary, a printed table.

Methods: `greedy`; `maj@k` (k samples, majority vote over equivalent answers); `rerank@k` (k
samples, the answer a trained reranker scores highest); `tree` (inference-time tree search,
answers after each of `tree_rollouts` rollouts). The
per-problem file is appended batch by batch and flushed, so a killed run resumes where it
stopped: finished problems are skipped and a half-written last line is dropped. The
summary is always computed from the whole file.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from tqdm import tqdm

from rftt.config import ConfigError, configured_device, to_dict
from rftt.data import DatasetSpec, Problem, load_problems
from rftt.engine.base import Engine
from rftt.engine.factory import EngineConfig, build_engine
from rftt.engine.types import SamplingParams
from rftt.jsonl import append_records, read_records
from rftt.models import DEFAULT_MODEL, step_tags_for_search
from rftt.precision import AUTO_DEVICE, DTYPE_NAMES, Precision
from rftt.prompts import get_template
from rftt.run_folder import RunFolder, claim_run_folder
from rftt.search.mcts import SearchConfig, TreeSearch
from rftt.search.policies import TOKEN_GUIDED_TOP_P, TokenGuidedPolicy, TreePolicyConfig
from rftt.search.process_rewards import ProcessRewardConfig, build_process_rewards
from rftt.search.scoring import ANSWERED_REASONS, SelfConsistencyScorer
from rftt.search.tree import Tree
from rftt.stats import wilson_interval
from rftt.tokens import render_steps
from rftt.train.reranker import load_reranker, rerank, score
from rftt.verify.judge import AnswerCheckConfig
from rftt.voting import Vote, majority_vote, weighted_vote

PROBLEMS_FILE = "problems.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
_METHOD = re.compile(r"^(greedy|tree|(maj|rerank)@(\d+))$")

RUN_PATHS = ("model", "dataset.path")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. `output_dir` holds its files; re-running the same config resumes it.
    `answer_check`: how answers are found and compared (`rftt.verify.judge.AnswerCheckConfig`, as in RL);
    `tree`: how the policy grows trees for `method: tree` (`rftt.search.policies.TreePolicyConfig`, as in RL's
    tree rollouts), `tree_rollouts` the rollout counts at which each tree is scored. `precision`: the weights'
    (`auto`: as the checkpoint is stored; `native`: bf16 where the device computes it natively, else fp32);
    `device`: `auto` (the GPU when there is one), `cpu`, `cuda` or `cuda:N` (see `rftt.precision`)."""

    renamed_keys: ClassVar[dict[str, str]] = {
        "answer_format": "answer_check.format", "absolute_tolerance": "answer_check.absolute_tolerance",
        "last_number_fallback": "answer_check.last_number_fallback", "tree_temperature": "tree.temperature",
        "tree_max_children": "tree.max_children", "tree_sampled_children": "tree.sampled_children",
        "tree_step_max_tokens": "tree.step_max_tokens", "dtype": "precision"}
    renamed_values: ClassVar[dict[str, dict[str, str]]] = {"precision": DTYPE_NAMES}
    former_defaults: ClassVar[dict[str, float]] = {"tree.top_p": TOKEN_GUIDED_TOP_P}

    model: str = DEFAULT_MODEL
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    method: str = "greedy"
    template: str = "chat"
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    precision: Precision = "auto"
    device: str = AUTO_DEVICE
    output_dir: str = "runs/eval"
    engine: EngineConfig = field(default_factory=EngineConfig)
    tree_rollouts: tuple[int, ...] = (1, 4, 16)
    tree: TreePolicyConfig = field(default_factory=TreePolicyConfig)
    search: SearchConfig = field(default_factory=lambda: SearchConfig(unvisited_order="prior"))
    process_rewards: ProcessRewardConfig = field(default_factory=ProcessRewardConfig)
    reranker: str | None = None
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)

    def samples(self) -> int:
        """k of `maj@k` and `rerank@k` (1 for greedy and tree)."""
        match = _METHOD.match(self.method)
        if not match:
            raise ConfigError(f"config.method: {self.method!r} is not 'greedy', 'tree', 'maj@k' or 'rerank@k' "
                              "(for example maj@8)")
        if match.group(2) == "rerank" and not self.reranker:
            raise ConfigError("config.reranker: rerank@k needs a trained reranker (rftt train-reranker)")
        if self.method == "tree":
            self.answer_check.check_for_tree_search("config.answer_check")
        return int(match.group(3) or 1)

    def sampling_params(self) -> SamplingParams:
        k = self.samples()
        return SamplingParams(n=k, temperature=0.0 if self.method == "greedy" else self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)


TREE_SEARCH_SETTINGS = ("tree", "tree_rollouts", "search", "process_rewards")


def evaluation_settings_in_use(settings: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's settings without those its method does not read (tree search's, unless `method: tree`),
    so that runs are compared by what decides their results."""
    if settings.get("method") == "tree":
        return settings
    return {key: value for key, value in settings.items() if key not in TREE_SEARCH_SETTINGS}


def _compared_on_resume(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as the resume check compares them: those in use, and not `dataset.limit`, since records are per
    problem (a larger limit evaluates only the new problems, a smaller one summarises the first ones)."""
    in_use = evaluation_settings_in_use(settings)
    return {**in_use, "dataset": {key: value for key, value in settings["dataset"].items() if key != "limit"}}


EVAL_RUN_FOLDER = RunFolder(CONFIG_FILE, RUN_PATHS, frozenset({"engine", "batch_size", "output_dir", "device"}),
                            _compared_on_resume)
"""Evaluation resumes with another engine, batch size, folder or device, with more or fewer problems, and with
other tree-search settings when it does not search."""


def _problem_record(problem: Problem, prompt: str, completions: list, outcomes: list, seconds: float,
                    scores: list[float] | None = None) -> dict:
    """A problem's samples and its answer: the majority vote, or with reranker scores the best-scored answer
    (the majority vote of the same samples is kept beside it, so one run compares both)."""
    majority = majority_vote([outcome.extracted for outcome in outcomes], [outcome.correct for outcome in outcomes])
    vote, compared = majority, {}
    if scores is not None:
        chosen = rerank([outcome.extracted for outcome in outcomes], scores)
        vote = Vote(None, 0, False) if chosen is None else Vote(outcomes[chosen].extracted, scores[chosen],
                                                                 outcomes[chosen].correct)
        compared = {"majority_answer": majority.answer, "majority_correct": majority.correct}
    return {
        "id": problem.id,
        "question": problem.question,
        "prompt": prompt,
        "gold": problem.answer,
        "completions": [completion.text for completion in completions],
        "finish_reasons": [completion.finish_reason for completion in completions],
        "completion_tokens": [len(completion.token_ids) for completion in completions],
        "extracted": [outcome.extracted for outcome in outcomes],
        "sample_correct": [outcome.correct for outcome in outcomes],
        "answer": vote.answer,
        "votes": vote.votes,
        "correct": vote.correct,
        "reranker_scores": scores,
        **compared,
        "generation_seconds": seconds,
    }


def _sampled_records(config: EvalConfig, engine: Engine, tokenizer: Any):
    """A function from a batch of problems to their records, for greedy and maj@k."""
    params = config.sampling_params()
    template = get_template(config.template)
    reranker = load_reranker(config.reranker, config.device) if config.method.startswith("rerank@") else None

    def make(batch: Sequence[Problem], on_problem_done: Callable[[], None]) -> list[dict[str, Any]]:
        prompts = [template.render(problem.question, tokenizer) for problem in batch]
        started = time.perf_counter()
        results = engine.generate(prompts, params)
        seconds = (time.perf_counter() - started) / len(batch)
        texts = [completion.text for samples in results for completion in samples]
        golds = [problem.gold for problem in batch for _ in range(params.n)]
        outcomes = config.answer_check.judge(texts, golds)
        scores = None
        if reranker is not None:
            scores = score(*reranker, [prompts[index // params.n] + text for index, text in enumerate(texts)])
        for _ in batch:
            on_problem_done()
        return [
            _problem_record(problem, prompt, samples, outcomes[index * params.n : (index + 1) * params.n], seconds,
                            scores[index * params.n : (index + 1) * params.n] if scores else None)
            for index, (problem, prompt, samples) in enumerate(zip(batch, prompts, results))
        ]

    return make


def _tree_records(config: EvalConfig, engine: Engine, tokenizer: Any):
    """A function from a batch of problems to their records, for inference-time tree search."""
    tags = step_tags_for_search(config.model, getattr(engine, "model", None), tokenizer)
    policy = TokenGuidedPolicy(engine, tokenizer, tags, template=config.template, seed=config.seed,
                               **config.tree.policy_settings(config.temperature, config.top_p, config.max_new_tokens))
    rewards = config.process_rewards
    scorer = SelfConsistencyScorer(build_process_rewards(rewards, config.device), rewards.outcome_weight, rewards.process_weight,
                                   last_number_fallback=config.answer_check.last_number_fallback)
    search = TreeSearch(policy, scorer, config.search)
    template = get_template(config.template)

    def make(batch: Sequence[Problem], on_problem_done: Callable[[], None]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        trees = search.run(batch, on_tree_done=lambda _: on_problem_done())
        seconds = (time.perf_counter() - started) / len(batch)
        return [_tree_record(tree, template.render(tree.question, tokenizer), config.tree_rollouts, seconds)
                for tree in trees]

    return make


def _tree_record(tree: Tree, prompt: str, rollout_counts: Sequence[int], seconds: float) -> dict[str, Any]:
    """A tree's terminals as samples; the answer after N rollouts is the value-weighted vote of the first N."""
    terminals = [tree.nodes[index] for index in tree.rollout_terminals]
    by_rollouts = {}
    for count in rollout_counts:
        first = terminals[:count]
        vote = weighted_vote([node.answer for node in first], [node.reward or 0.0 for node in first],
                             [bool(node.correct) for node in first])
        by_rollouts[str(count)] = {"answer": vote.answer, "correct": vote.correct}
    final = by_rollouts[str(max(rollout_counts))]
    return {
        "id": tree.problem_id, "question": tree.question, "prompt": prompt, "gold": tree.gold,
        "completions": [render_steps(tree.steps(node)) for node in terminals],
        "finish_reasons": ["stop" if node.terminal_reason in ANSWERED_REASONS else "length" for node in terminals],
        "completion_tokens": [tree.trace_tokens(node) for node in terminals],
        "extracted": [node.answer for node in terminals],
        "sample_correct": [bool(node.correct) for node in terminals],
        "answer": final["answer"], "votes": None, "correct": final["correct"],
        "by_rollouts": by_rollouts, "nodes_written": tree.written_nodes(), "generation_seconds": seconds,
    }


def summarise(records: Sequence[dict[str, Any]], config: EvalConfig) -> dict[str, Any]:
    """Accuracy with its 95% interval, extraction rate, lengths and speed over all records."""
    total = len(records)
    correct = sum(record["correct"] for record in records)
    extracted = sum(record["answer"] is not None for record in records)
    samples = [flag for record in records for flag in record["sample_correct"]]
    tokens = sum(sum(record["completion_tokens"]) for record in records)
    seconds = sum(record["generation_seconds"] for record in records)
    low, high = wilson_interval(correct, total)
    return {
        "model": config.model, "dataset": config.dataset.name, "method": config.method, "template": config.template,
        "problems": total,
        "accuracy": correct / total if total else 0.0,
        "accuracy_95_interval": [low, high],
        "extraction_rate": extracted / total if total else 0.0,
        "accuracy_among_extracted": correct / extracted if extracted else 0.0,
        "sample_accuracy": sum(samples) / len(samples) if samples else 0.0,
        "pass_at_k": sum(any(record["sample_correct"]) for record in records) / total if total else 0.0,
        "mean_completion_tokens": tokens / len(samples) if samples else 0.0,
        "truncated_fraction": (sum(reason == "length" for record in records for reason in record["finish_reasons"])
                               / len(samples) if samples else 0.0),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "generation_seconds": seconds,
        **_accuracy_by_rollouts(records),
        **_majority_accuracy(records),
    }


def _majority_accuracy(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For rerank@k: the majority vote's accuracy over the very samples the reranker chose from."""
    if not records or "majority_correct" not in records[0]:
        return {}
    correct = sum(record["majority_correct"] for record in records)
    return {"majority_accuracy": correct / len(records),
            "majority_accuracy_95_interval": list(wilson_interval(correct, len(records)))}


def _accuracy_by_rollouts(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not records or "by_rollouts" not in records[0]:
        return {}
    counts = list(records[0]["by_rollouts"])
    return {"accuracy_by_rollouts": {count: sum(record["by_rollouts"][count]["correct"] for record in records)
                                     / len(records) for count in counts}}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small table."""
    low, high = summary["accuracy_95_interval"]
    rows = [
        ("model", summary["model"]), ("dataset", summary["dataset"]), ("method", summary["method"]),
        ("template", summary["template"]), ("problems", summary["problems"]),
        ("accuracy", f"{summary['accuracy']:.1%} (95% interval {low:.1%}-{high:.1%})"),
        ("answers extracted", f"{summary['extraction_rate']:.1%}"),
        ("accuracy among extracted", f"{summary['accuracy_among_extracted']:.1%}"),
        ("per-sample accuracy", f"{summary['sample_accuracy']:.1%}"),
        ("pass@k", f"{summary['pass_at_k']:.1%}"),
        ("mean completion tokens", f"{summary['mean_completion_tokens']:.1f}"),
        ("hit the length limit", f"{summary['truncated_fraction']:.1%}"),
        ("generation tokens/s", f"{summary['tokens_per_second']:.1f}"),
    ]
    if "majority_accuracy" in summary:
        rows.append(("majority vote, same samples", f"{summary['majority_accuracy']:.1%}"))
    rows += [(f"accuracy, {count} rollouts", f"{accuracy:.1%}")
             for count, accuracy in summary.get("accuracy_by_rollouts", {}).items()]
    return "\n".join(f"{name:<26}{value}" for name, value in rows)


def as_run(config: EvalConfig) -> EvalConfig:
    """The config as it runs, checked: a tree search makes the largest of `tree_rollouts` rollouts per problem,
    so that is its `search.rollouts`; `device: auto` becomes the device it runs on (both as its saved config.json
    says)."""
    config.samples()
    config = replace(config, device=str(configured_device("config.device", config.device)))
    if config.method != "tree":
        return config
    return replace(config, search=replace(config.search, rollouts=max(config.tree_rollouts)))


def evaluate(config: EvalConfig, *, engine: Engine | None = None, tokenizer: Any = None,
             problems: Sequence[Problem] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an evaluation and return its summary; files go to `config.output_dir`."""
    config = as_run(config)
    get_template(config.template)
    output = Path(config.output_dir)
    claim_run_folder(output, EvalConfig, to_dict(config), EVAL_RUN_FOLDER)
    problems = list(problems if problems is not None else load_problems(config.dataset))
    records_path = output / PROBLEMS_FILE
    finished = read_records(records_path, repair=True)
    done_ids = {record["id"] for record in finished}
    todo = [problem for problem in problems if problem.id not in done_ids]
    if todo and engine is None:
        engine, tokenizer = build_engine(config.engine, config.model, config.precision, config.device)
    make_records = _tree_records(config, engine, tokenizer) if config.method == "tree" else _sampled_records(
        config, engine, tokenizer)
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="eval", unit="problem", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        records = make_records(batch, lambda: bar.update(1))  # a tree search reports each tree as it ends
        append_records(records_path, records)
        finished.extend(records)
    bar.close()
    wanted = {problem.id for problem in problems}
    summary = summarise([record for record in finished if record["id"] in wanted], config)
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
