"""Rollouts: trajectories for RL, by plain sampling (ReFT, the "normal" baseline) or by tree search (RFTT).

Both produce the same `TrajectoryBatch`: per sample its prompt and response token ids, the
prompt it answers (`group`), the verified outcome, the positions of the tokens that close
its steps, the process reward of each step, and its moves. A tree rollout is one
root-to-leaf path of a token-guided search, as released (duplicates kept), ending with the
end-of-sequence token after `<output>` so the policy learns to stop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import torch

from rftt.data import Problem
from rftt.engine.base import Engine
from rftt.engine.types import SamplingParams
from rftt.prompts import get_template
from rftt.rewards import RewardConfig, token_rewards
from rftt.search.mcts import SearchConfig, TreeSearch
from rftt.search.policies import TokenGuidedPolicy, TreePolicyConfig
from rftt.search.process_rewards import tree_value_rewards
from rftt.search.scoring import OutcomeScorer
from rftt.tokens import StepTags
from rftt.verify import Outcome
from rftt.verify.judge import AnswerCheckConfig


@dataclass(frozen=True)
class RolloutConfig:
    """How trajectories are made. `kind: sampling` draws `samples_per_prompt` completions per prompt;
    `kind: tree` runs a token-guided search with that many rollouts per prompt, the policy growing trees as
    `tree` says (`rftt.search.policies.TreePolicyConfig`, as in tree-search evaluation: unset, its steps sample at
    this `temperature` and run to `max_new_tokens`). `oversample: k` rolls out k times the step's prompts and
    trains on the step's number of groups, those whose samples' rewards differ first (`keep_informative_groups`).
    `answer_check`: how answers are found and compared (`rftt.verify.judge.AnswerCheckConfig`, as in evaluation)."""

    renamed_keys: ClassVar[dict[str, str]] = {
        "answer_format": "answer_check.format", "absolute_tolerance": "answer_check.absolute_tolerance",
        "last_number_fallback": "answer_check.last_number_fallback", "step_max_tokens": "tree.step_max_tokens",
        "max_children": "tree.max_children", "sampled_children": "tree.sampled_children"}

    kind: Literal["sampling", "tree"] = "sampling"
    samples_per_prompt: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    template: str = "chat"
    tree: TreePolicyConfig = field(default_factory=TreePolicyConfig)
    oversample: int = 1
    search: SearchConfig = field(default_factory=lambda: SearchConfig(unvisited_order="prior", parallel_rollouts=4))
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)


@dataclass
class TrajectoryBatch:
    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    step_ends: list[list[int]] = field(default_factory=list)
    step_scores: list[list[float]] = field(default_factory=list)
    moves: list[list[str]] = field(default_factory=list)
    problem_ids: list[str] = field(default_factory=list)
    outcome_rewards: list[float] = field(default_factory=list)  # each trajectory's, set once its answer is judged
    rolled_out_groups: int = 0  # before `keep_informative_groups`: the groups rolled out, how many had mixed rewards
    informative_groups: int = 0
    rolled_out_accuracy: float = 0.0

    def __len__(self) -> int:
        return len(self.response_ids)

    def rows(self, indices: Sequence[int], groups: Sequence[int]) -> "TrajectoryBatch":
        """The batch of the given rows, their groups renumbered as `groups`."""
        def pick(values: list) -> list:
            return [values[index] for index in indices]

        return TrajectoryBatch(pick(self.prompt_ids), pick(self.response_ids), list(groups), pick(self.outcomes),
                               pick(self.step_ends), pick(self.step_scores), pick(self.moves), pick(self.problem_ids),
                               pick(self.outcome_rewards) if self.outcome_rewards else [])

    def move_counts(self) -> Counter:
        return Counter(move for moves in self.moves for move in moves)

    def token_rewards(self, width: int, config: RewardConfig) -> torch.Tensor:
        """Each token's reward (responses right-aligned in `width` columns): the outcome rewards the rollout judged
        on the last tokens, process rewards on the tokens that close steps."""
        right_aligned = [[position + width - len(response) for position in ends]
                         for ends, response in zip(self.step_ends, self.response_ids)]
        return token_rewards([width] * len(self), self.outcome_rewards, width, right_aligned, self.step_scores, config)


def _step_ends(response: Sequence[int], tokens: StepTags | None) -> tuple[list[int], list[str]]:
    """Positions of the tokens that close steps, and the moves of those steps."""
    if tokens is None:
        return [], []
    spans = tokens.step_spans(list(response))
    return ([span.close_index for span in spans if span.close_index is not None],
            [span.move.value for span in spans])


@dataclass(frozen=True)
class RolloutModel:
    """What rollouts generate with: the engine over the policy, its tokenizer, and its step tags (None where the
    policy writes plain answers; tree rollouts need them)."""

    engine: Engine
    tokenizer: Any
    tokens: StepTags | None


def greedy_accuracy(engine: Engine, tokenizer: Any, problems: Sequence[Problem], config: RolloutConfig,
                    max_new_tokens: int) -> float:
    """Greedy accuracy on held-out problems with the rollout prompt template and answer check."""
    template = get_template(config.template)
    prompts = [template.render(problem.question, tokenizer) for problem in problems]
    results = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens))
    outcomes = config.answer_check.judge([samples[0].text for samples in results], [problem.gold for problem in problems])
    return sum(outcome.correct for outcome in outcomes) / max(len(problems), 1)


def sampling_rollouts(model: RolloutModel, problems: Sequence[Problem], config: RolloutConfig,
                      seed: int) -> TrajectoryBatch:
    """`samples_per_prompt` sampled completions per problem, verified against the gold answers."""
    engine, tokenizer, tokens = model.engine, model.tokenizer, model.tokens
    template = get_template(config.template)
    prompts = [tokenizer.encode(template.render(problem.question, tokenizer), add_special_tokens=False)
               for problem in problems]
    params = SamplingParams(n=config.samples_per_prompt, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, seed=seed)
    results = engine.generate(prompts, params)
    batch = TrajectoryBatch()
    texts, golds = [], []
    for group, (problem, prompt, samples) in enumerate(zip(problems, prompts, results)):
        for completion in samples:
            ends, moves = _step_ends(completion.token_ids, tokens)
            batch.prompt_ids.append(prompt)
            batch.response_ids.append(list(completion.token_ids))
            batch.groups.append(group)
            batch.step_ends.append(ends)
            batch.step_scores.append([])
            batch.moves.append(moves)
            batch.problem_ids.append(problem.id)
            texts.append(completion.text)
            golds.append(problem.gold)
    batch.outcomes = config.answer_check.judge(texts, golds)
    return batch


def tree_rollouts(model: RolloutModel, problems: Sequence[Problem], config: RolloutConfig, seed: int) -> TrajectoryBatch:
    """One trajectory per rollout of a token-guided search; step scores are the tree's node values."""
    engine, tokenizer, tokens = model.engine, model.tokenizer, model.tokens
    if tokens is None:
        raise ValueError("tree rollouts need the policy's step tags")
    policy = TokenGuidedPolicy(engine, tokenizer, tokens, template=config.template, seed=seed,
                               **config.tree.policy_settings(config.temperature, config.top_p, config.max_new_tokens))
    search_config = SearchConfig(**{**config.search.__dict__, "rollouts": config.samples_per_prompt, "seed": seed})
    scorer = OutcomeScorer(last_number_fallback=config.answer_check.last_number_fallback)
    trees = TreeSearch(policy, scorer, search_config).run(problems)
    batch = TrajectoryBatch()
    for group, (problem, tree) in enumerate(zip(problems, trees)):
        prompt = policy.prefix_ids(tree, tree.root)
        for terminal_id in tree.rollout_terminals:
            terminal = tree.nodes[terminal_id]
            path = tree.path(terminal)
            response = [token for node in path for token in node.token_ids]
            if terminal.terminal_reason == "output" and tokenizer.eos_token_id is not None:
                response.append(tokenizer.eos_token_id)
            ends, moves = _step_ends(response, tokens)
            batch.prompt_ids.append(prompt)
            batch.response_ids.append(response)
            batch.groups.append(group)
            reason = "equal" if terminal.correct else "no_answer" if terminal.answer is None else "not_equal"
            batch.outcomes.append(Outcome(bool(terminal.correct), terminal.answer, reason))
            batch.step_ends.append(ends)
            batch.step_scores.append(tree_value_rewards(tree, terminal)[: len(ends)])
            batch.moves.append(moves)
            batch.problem_ids.append(problem.id)
    return batch


def keep_informative_groups(batch: TrajectoryBatch, rewards: Sequence[float], count: int) -> TrajectoryBatch:
    """`count` of the batch's groups: first those whose samples' rewards differ, then the others, kept in their
    order and renumbered from 0. A group whose samples all score the same teaches GRPO nothing and REINFORCE++
    only the batch mean, so an oversampled rollout keeps the informative ones (DAPO's dynamic sampling)."""
    members: dict[int, list[int]] = {}
    for row, group in enumerate(batch.groups):
        members.setdefault(group, []).append(row)
    informative = [group for group, rows in members.items() if len({rewards[row] for row in rows}) > 1]
    uniform = [group for group in members if group not in informative]
    kept = sorted((informative + uniform)[:count], key=list(members).index)
    rows = [row for group in kept for row in members[group]]
    selected = batch.rows(rows, [number for number, group in enumerate(kept) for _ in members[group]])
    selected.rolled_out_groups, selected.informative_groups = len(members), len(informative)
    selected.rolled_out_accuracy = sum(outcome.correct for outcome in batch.outcomes) / max(len(batch), 1)
    return selected
