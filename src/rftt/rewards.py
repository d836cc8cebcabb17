"""Rewards to tokens: the outcome reward on the last token, process rewards on the tokens that close steps.

Outcome values are configurable (RFTT: 1 correct / 0 otherwise; ReFT: 1 correct, 0.1 an
answer extracted but wrong, 0 none). With process rewards, each step's score sits on the
token that closes the step and the last token gets `outcome_weight * outcome +
process_weight * last step's score` (released: 0.6 / 0.4). The KL penalty to the
reference model is subtracted per token when it is placed in the reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rftt.verify import Outcome

OUTCOME_WEIGHT = 0.6
PROCESS_WEIGHT = 0.4
"""RFTT's released mix of an outcome (or a vote's agreement) with the last step's process reward; every place that
mixes the two defaults to it."""


@dataclass(frozen=True)
class RewardConfig:
    correct: float = 1.0
    wrong_answer: float = 0.0
    no_answer: float = 0.0
    process_rewards: bool = False
    outcome_weight: float = OUTCOME_WEIGHT
    process_weight: float = PROCESS_WEIGHT


def outcome_reward(outcome: Outcome, config: RewardConfig) -> float:
    """The scalar reward of one verified answer."""
    if outcome.correct:
        return config.correct
    return config.no_answer if outcome.extracted is None else config.wrong_answer


def token_rewards(lengths: Sequence[int], outcomes: Sequence[float], width: int,
                  step_ends: Sequence[Sequence[int]] | None = None,
                  step_scores: Sequence[Sequence[float]] | None = None,
                  config: RewardConfig = RewardConfig()) -> torch.Tensor:
    """A (samples, width) tensor of per-token rewards for responses of the given lengths.

    Without process rewards the outcome sits on each response's last token. With them,
    score k of a sample sits on its k-th step end (the index of the token closing step k)
    and the last token gets the outcome mixed with the last step's score.
    """
    rewards = torch.zeros(len(lengths), width)
    for row, (length, outcome) in enumerate(zip(lengths, outcomes)):
        if length == 0:
            continue
        final = outcome
        if config.process_rewards and step_ends is not None and step_scores is not None and step_scores[row]:
            for position, score in zip(step_ends[row], step_scores[row]):
                if position < length - 1:
                    rewards[row, position] += score
            final = config.outcome_weight * outcome + config.process_weight * step_scores[row][-1]
        rewards[row, length - 1] += final
    return rewards
