"""Values of terminal nodes: what a rollout backs up.

- `OutcomeScorer` (training): 1 when the trace's final answer equals the gold answer, else 0,
  optionally mixed with the process reward of the last step (released: 0.6 / 0.4);
- `SelfConsistencyScorer` (inference, no gold): how many earlier terminals of the same tree
  gave the same answer, optionally mixed with a process reward.

Traces that stop without an answer (depth limit, token budget, no legal move) are worth 0.
Both record whether the answer is correct, for reports; only the outcome scorer uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from rftt.rewards import OUTCOME_WEIGHT, PROCESS_WEIGHT
from rftt.search.process_rewards import ProcessRewardModel
from rftt.search.tree import Node, Tree
from rftt.tokens import render_steps
from rftt.verify import Gold, check_many
from rftt.verify.outcome import PIPELINE_LAST_NUMBER_FALLBACK
from rftt.voting import answer_key

ANSWERED_REASONS = ("output", "end_of_sequence")


@dataclass(frozen=True)
class ScoredTerminal:
    value: float
    correct: bool | None
    answer: str | None
    process_reward: float | None = None


class TerminalScorer(Protocol):
    def score(self, requests: Sequence[tuple[Tree, Node]]) -> list[ScoredTerminal]:
        """A value (and answer, correctness) for each terminal node."""


@dataclass
class _Judged:
    answer: str | None
    correct: bool
    process_reward: float | None


def _judge(requests: Sequence[tuple[Tree, Node]], process_rewards: ProcessRewardModel | None,
           last_number_fallback: bool) -> list[_Judged]:
    """Extract and check each terminal's answer; score its steps with the PRM when there is one."""
    answered = [node.terminal_reason in ANSWERED_REASONS for _, node in requests]
    texts = [render_steps(tree.steps(node)) if ok else "" for (tree, node), ok in zip(requests, answered)]
    outcomes = check_many(texts, [Gold(tree.gold, tree.gold_format) for tree, _ in requests],
                          last_number_fallback=last_number_fallback)
    step_scores: list[list[float] | None] = [None] * len(requests)
    if process_rewards is not None:
        items = [(tree.question, [step.content for step in tree.steps(node)]) for tree, node in requests]
        step_scores = list(process_rewards.score_steps(items))
    return [_Judged(outcome.extracted, outcome.correct, scores[-1] if scores else None)
            for outcome, scores in zip(outcomes, step_scores)]


def _mix(primary: float, process_reward: float | None, primary_weight: float, process_weight: float) -> float:
    return primary if process_reward is None else primary_weight * primary + process_weight * process_reward


@dataclass
class OutcomeScorer:
    """Training-time values from the gold answer (and a process reward, when given)."""

    process_rewards: ProcessRewardModel | None = None
    outcome_weight: float = OUTCOME_WEIGHT
    process_weight: float = PROCESS_WEIGHT
    correct_reward: float = 1.0
    wrong_reward: float = 0.0
    last_number_fallback: bool = PIPELINE_LAST_NUMBER_FALLBACK

    def score(self, requests: Sequence[tuple[Tree, Node]]) -> list[ScoredTerminal]:
        judged = _judge(requests, self.process_rewards, self.last_number_fallback)
        return [
            ScoredTerminal(_mix(self.correct_reward if item.correct else self.wrong_reward, item.process_reward,
                                self.outcome_weight, self.process_weight),
                           item.correct, item.answer, item.process_reward)
            for item in judged
        ]


@dataclass
class SelfConsistencyScorer:
    """Inference-time values without the gold answer: agreement with the tree's earlier answers."""

    process_rewards: ProcessRewardModel | None = None
    agreement_weight: float = OUTCOME_WEIGHT
    process_weight: float = PROCESS_WEIGHT
    last_number_fallback: bool = PIPELINE_LAST_NUMBER_FALLBACK

    def score(self, requests: Sequence[tuple[Tree, Node]]) -> list[ScoredTerminal]:
        judged = _judge(requests, self.process_rewards, self.last_number_fallback)
        scored = []
        for (tree, _), item in zip(requests, judged):
            earlier = [node.answer for node in tree.terminals() if node.answer is not None]
            if item.answer is None:
                agreement = 0.0
            else:
                key = answer_key(item.answer)
                agreement = (1 + sum(answer_key(answer) == key for answer in earlier)) / (1 + len(earlier))
            value = _mix(agreement, item.process_reward, self.agreement_weight, self.process_weight)
            scored.append(ScoredTerminal(value, item.correct, item.answer, item.process_reward))
        return scored
