"""`rftt search`: dataset + model + budget -> a tree per problem and the SFT file, resumable after a kill.

Problems are searched in groups; after each group its trees (one JSON line per problem,
with the greedy baseline's answer) and then its training records are appended and
flushed. On restart, problems whose tree line exists are skipped, a half-written last
line is dropped, and training records of problems without a tree line are removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from tqdm import tqdm

from rftt.config import configured_device, to_dict
from rftt.data import DatasetSpec, Problem, load_problems
from rftt.engine.factory import EngineConfig, build_engine
from rftt.engine.types import SamplingParams
from rftt.jsonl import append_records, read_records
from rftt.models import DEFAULT_MODEL, step_tags_for_search
from rftt.precision import AUTO_DEVICE, DTYPE_NAMES, Precision
from rftt.prompts import get_template
from rftt.run_folder import RunFolder, claim_run_folder
from rftt.search.export import ExportConfig, export_training_data
from rftt.search.mcts import SearchConfig, TreeSearch
from rftt.search.policies import (
    MOVE_EXAMPLES,
    MOVE_INSTRUCTIONS,
    PHASE_ONE_MOVES,
    PROMPTED_STEP_TOKENS,
    TOKEN_GUIDED_STEP_TOKENS,
    TOKEN_GUIDED_TOP_P,
    MoveExample,
    PromptedPolicy,
    TokenGuidedPolicy,
    TreePolicyConfig,
)
from rftt.search.process_rewards import ProcessRewardConfig, build_process_rewards
from rftt.search.scoring import OutcomeScorer
from rftt.search.tree import Tree
from rftt.tokens import Move
from rftt.verify.judge import AnswerCheckConfig

TREES_FILE = "trees.jsonl"
SFT_FILE = "sft.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class SearchRunConfig:
    """One `rftt search` run. Prompted-policy settings: `moves` it may make, per-move overrides of the step
    length limits (`step_max_tokens`, default `PROMPTED_STEP_TOKENS`), of the instructions (`instructions`,
    default `MOVE_INSTRUCTIONS`) and of the worked examples (`examples`: per move a list of `{question,
    steps: [[move, content], ...], content}`, default `MOVE_EXAMPLES`); `end_truncated_steps` makes a step
    cut at its limit a dead end. `tree`: how `policy: token_guided` grows trees (`TreePolicyConfig`, as in evaluation
    and RL). `answer_check`: how answers are judged (`AnswerCheckConfig`, as in evaluation and RL). `precision` and
    `device`: as in `EvalConfig` (config.json records the device used)."""

    renamed_keys: ClassVar[dict[str, str]] = {"dtype": "precision"}
    renamed_values: ClassVar[dict[str, dict[str, str]]] = {"precision": DTYPE_NAMES}

    model: str = DEFAULT_MODEL
    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec(name="arithmetic", size=100, seed=1))
    policy: Literal["prompted", "token_guided"] = "prompted"
    candidates: int = 2
    temperature: float = 0.7
    moves: tuple[str, ...] = tuple(move.value for move in PHASE_ONE_MOVES)
    step_max_tokens: dict[str, int] = field(default_factory=dict)
    instructions: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    end_truncated_steps: bool = True
    tree: TreePolicyConfig = field(default_factory=TreePolicyConfig)
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    process_rewards: ProcessRewardConfig = field(default_factory=ProcessRewardConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    greedy_baseline: bool = True
    greedy_max_tokens: int = 256
    problems_per_group: int = 16
    precision: Precision = "auto"
    device: str = AUTO_DEVICE
    output_dir: str = "runs/search"


SEARCH_RUN_FOLDER = RunFolder("config.json", ("model", "dataset.path", "output_dir"),
                              frozenset({"engine", "device", "problems_per_group", "output_dir"}))
"""A search resumes (searching the problems not yet searched) with another engine, device or group size."""


def greedy_solved(engine, tokenizer, problems: Sequence[Problem], max_tokens: int,
                  answer_check: AnswerCheckConfig) -> list[bool]:
    """Whether greedy decoding with the chat template answers each problem correctly."""
    template = get_template("chat")
    results = engine.generate([template.render(problem.question, tokenizer) for problem in problems],
                              SamplingParams(max_new_tokens=max_tokens))
    outcomes = answer_check.judge([samples[0].text for samples in results], [problem.gold for problem in problems])
    return [outcome.correct for outcome in outcomes]


def moves(values, key: str):
    """A config's move names as `Move`s (the keys of a mapping, or the items of a list); unknown names are errors."""
    from rftt.config import ConfigError

    def move(name: str) -> Move:
        try:
            return Move(name)
        except ValueError:
            raise ConfigError(f"config.{key}: unknown move {name!r}; moves: {', '.join(m.value for m in Move)}") from None

    if isinstance(values, dict):
        return {move(name): value for name, value in values.items()}
    return [move(name) for name in values]


def move_examples(examples: dict[str, list[dict[str, Any]]]) -> dict[Move, tuple[MoveExample, ...]]:
    """`examples` from a recipe as `MoveExample`s; a malformed one is an error naming its key."""
    from rftt.config import ConfigError

    converted = {}
    for move, items in moves(examples, "examples").items():
        try:
            converted[move] = tuple(MoveExample(item["question"], tuple((moves([name], "examples")[0], content)
                                                                        for name, content in item.get("steps", [])),
                                                item["content"]) for item in items)
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"config.examples.{move.value}: each example needs question, content and optional "
                              f"steps [[move, content], ...] ({error!r})") from None
    return converted


def _make_search(config: SearchRunConfig, engine, tokenizer) -> TreeSearch:
    if config.policy == "prompted":
        policy = PromptedPolicy(engine, tokenizer, moves=tuple(moves(config.moves, "moves")),
                                candidates=config.candidates, temperature=config.temperature,
                                max_tokens={**PROMPTED_STEP_TOKENS, **moves(config.step_max_tokens, "step_max_tokens")},
                                instructions={**MOVE_INSTRUCTIONS, **moves(config.instructions, "instructions")},
                                examples={**MOVE_EXAMPLES, **move_examples(config.examples)},
                                end_truncated_steps=config.end_truncated_steps, seed=config.search.seed)
    else:
        tags = step_tags_for_search(config.model, getattr(engine, "model", None), tokenizer)
        policy = TokenGuidedPolicy(engine, tokenizer, tags, seed=config.search.seed, **config.tree.policy_settings(
            config.temperature, TOKEN_GUIDED_TOP_P, TOKEN_GUIDED_STEP_TOKENS))
    rewards = config.process_rewards
    scorer = OutcomeScorer(build_process_rewards(rewards, config.device), rewards.outcome_weight, rewards.process_weight,
                           last_number_fallback=config.answer_check.last_number_fallback)
    return TreeSearch(policy, scorer, config.search)


def _resume(output: Path) -> set[str]:
    """Problem ids already searched; training records of unfinished problems are dropped."""
    trees = read_records(output / TREES_FILE, repair=True)
    done = {record["tree"]["problem_id"] for record in trees}
    sft_path = output / SFT_FILE
    kept = [record for record in read_records(sft_path, repair=True) if record["problem_id"] in done]
    if sft_path.exists():
        sft_path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in kept))
    return done


def summarise(output: Path) -> dict[str, Any]:
    trees = read_records(output / TREES_FILE)
    sft = read_records(output / SFT_FILE)
    nodes = sum(record["nodes_written"] for record in trees)
    seconds = sum(record["search_seconds"] for record in trees)
    return {
        "problems": len(trees),
        "solved_by_greedy": sum(bool(record["greedy_correct"]) for record in trees),
        "solved_by_search": sum(any(node["correct"] for node in record["tree"]["nodes"]) for record in trees),
        "nodes": nodes,
        "generated_tokens": sum(record["generated_tokens"] for record in trees),
        "search_seconds": seconds,
        "nodes_per_second": nodes / seconds if seconds else 0.0,
        "correct_paths": sum(record["kind"] == "correct" for record in sft),
        "reflection_paths": sum(record["kind"] == "reflection" for record in sft),
    }


def run_search(config: SearchRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Search every problem not yet searched in `config.output_dir`, export its data, return the summary."""
    config.answer_check.check_for_tree_search("config.answer_check")
    config = replace(config, device=str(configured_device("config.device", config.device)))
    output = Path(config.output_dir)
    claim_run_folder(output, SearchRunConfig, to_dict(config), SEARCH_RUN_FOLDER)
    done = _resume(output)
    problems = [problem for problem in load_problems(config.dataset) if problem.id not in done]
    if problems:
        engine, tokenizer = build_engine(config.engine, config.model, config.precision, config.device)
        search = _make_search(config, engine, tokenizer)
        bar = tqdm(total=len(problems) + len(done), initial=len(done), desc="search", unit="problem",
                   disable=not progress)
        for start in range(0, len(problems), config.problems_per_group):
            group = problems[start : start + config.problems_per_group]
            baseline = (greedy_solved(engine, tokenizer, group, config.greedy_max_tokens, config.answer_check)
                        if config.greedy_baseline else [None] * len(group))
            seconds_before = search.statistics.seconds
            trees = search.run(group, on_tree_done=lambda tree: bar.update(1))
            seconds = (search.statistics.seconds - seconds_before) / len(group)
            records = export_training_data(trees, engine, tokenizer, config.export)
            append_records(output / TREES_FILE, [_tree_record(tree, correct, seconds) for tree, correct in
                                                 zip(trees, baseline)])
            append_records(output / SFT_FILE, records)
        bar.close()
    summary = summarise(output)
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _tree_record(tree: Tree, greedy_correct: bool | None, seconds: float) -> dict[str, Any]:
    """One problem's line: the whole tree, the greedy baseline, the tokens its nodes generated, and its share of
    the group's search time (trees are searched together)."""
    return {"tree": tree.to_json(), "greedy_correct": greedy_correct, "nodes_written": tree.written_nodes(),
            "generated_tokens": sum(node.generated_tokens for node in tree.nodes), "search_seconds": seconds}
