"""Every registered RL function against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rftt.algos import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    clipped_value_loss,
    compute_advantages,
    discounted_returns,
    entropy_from_logits,
    masked_mean,
    masked_whiten,
)

T = torch.tensor


def close(got: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-4)


def test_registries_hold_the_named_functions():
    assert set(ADVANTAGE_ESTIMATORS) == {"reinforce_pp", "gae", "grpo", "rloo"}
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"} and set(POLICY_LOSSES) == {"ppo_clip"}
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        compute_advantages("ppo", T([[1.0]]), T([[1.0]]))


def test_masked_mean_and_whiten():
    values, mask = T([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]]), T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(values, mask) == pytest.approx(2.0)
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([1.5, 3.0])
    # valid values 1, 2, 3: mean 2, population std sqrt(2/3)
    close(masked_whiten(values, mask), [[-1 / math.sqrt(2 / 3), 0.0, 0.0], [1 / math.sqrt(2 / 3), 0.0, 0.0]])


def test_discounted_returns_by_hand():
    rewards, mask = T([[0.0, 0.0, 1.0]]), T([[1.0, 1.0, 1.0]])
    assert discounted_returns(rewards, mask, 0.5).tolist() == [[0.25, 0.5, 1.0]]


def test_reinforce_pp_whitens_returns_over_all_valid_tokens():
    rewards = T([[0.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = ADVANTAGE_ESTIMATORS["reinforce_pp"](rewards, mask, gamma=1.0)
    assert returns.tolist() == [[1.0, 1.0, 1.0], [0.5, 0.5, 0.0]]
    # valid returns 1,1,1,.5,.5: mean .8, variance .06, std .24495
    high, low = 0.2 / math.sqrt(0.06), -0.3 / math.sqrt(0.06)
    close(advantages, [[high, high, high], [low, low, 0.0]])


def test_gae_by_hand():
    rewards, mask = T([[0.0, 0.0, 1.0, 0.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    values = T([[0.5, 0.6, 0.7, 0.9]])
    advantages, returns = ADVANTAGE_ESTIMATORS["gae"](rewards, mask, values=values, gamma=1.0, lam=0.5, whiten=False)
    # delta_2 = 1 - .7 = .3; delta_1 = .7 - .6 = .1; delta_0 = .6 - .5 = .1
    # A_2 = .3; A_1 = .1 + .5 * .3 = .25; A_0 = .1 + .5 * .25 = .225
    close(advantages, [[0.225, 0.25, 0.3, 0.0]])
    close(returns, [[0.725, 0.85, 1.0, 0.0]])
    whitened, _ = ADVANTAGE_ESTIMATORS["gae"](rewards, mask, values=values, gamma=1.0, lam=0.5)
    assert masked_mean(whitened, mask) == pytest.approx(0.0, abs=1e-6)


def test_grpo_normalises_within_each_group():
    rewards = T([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mask = torch.ones(4, 2)
    advantages, _ = ADVANTAGE_ESTIMATORS["grpo"](rewards, mask, group_ids=T([0, 0, 1, 1]))
    # group 0 scores 1, 0: mean .5, sample std .7071; group 1 scores 1, 1: no spread, advantage 0
    assert advantages[:, 0].tolist() == pytest.approx([0.5 / 0.70711, -0.5 / 0.70711, 0.0, 0.0], abs=1e-4)
    assert torch.equal(advantages[:, 0], advantages[:, 1])


def test_rloo_uses_the_mean_of_the_others():
    rewards, mask = T([[1.0], [0.0], [0.5]]), torch.ones(3, 1)
    advantages, _ = ADVANTAGE_ESTIMATORS["rloo"](rewards, mask, group_ids=T([0, 0, 0]))
    assert advantages[:, 0].tolist() == pytest.approx([0.75, -0.75, 0.0])


def test_kl_estimators_by_hand():
    logprobs, reference = T([math.log(0.5)]), T([math.log(0.25)])
    assert KL_ESTIMATORS["k1"](logprobs, reference).item() == pytest.approx(math.log(2))
    assert KL_ESTIMATORS["k2"](logprobs, reference).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert KL_ESTIMATORS["k3"](logprobs, reference).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert KL_ESTIMATORS["k3"](reference, reference).item() == 0.0


def test_ppo_clip_loss_by_hand():
    old = T([[0.0, 0.0]])
    new = old + math.log(1.5)
    mask = T([[1.0, 1.0]])
    loss, stats = POLICY_LOSSES["ppo_clip"](new, old, T([[1.0, -1.0]]), mask, clip=0.2)
    # A = +1: max(-1.5, -1.2) = -1.2 (clipped); A = -1: max(1.5, 1.2) = 1.5 (not clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    loss, _ = POLICY_LOSSES["ppo_clip"](new, old, T([[1.0, 1.0]]), mask, clip=0.2)
    assert loss.item() == pytest.approx(-1.2)


def test_ppo_sequence_mean_weighs_sequences_equally():
    logprobs = torch.zeros(2, 3)
    advantages = T([[1.0, 1.0, 1.0], [-2.0, 0.0, 0.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token_mean, _ = POLICY_LOSSES["ppo_clip"](logprobs, logprobs, advantages, mask, aggregation="token_mean")
    sequence_mean, _ = POLICY_LOSSES["ppo_clip"](logprobs, logprobs, advantages, mask, aggregation="sequence_mean")
    assert token_mean.item() == pytest.approx((-3 + 2) / 4)
    assert sequence_mean.item() == pytest.approx((-1 + 2) / 2)


def test_clipped_value_loss_by_hand():
    loss, stats = clipped_value_loss(T([[0.5]]), T([[0.3]]), T([[1.0]]), T([[1.0]]), clip=0.1)
    # clipped value .4: max((.5-1)^2, (.4-1)^2) = .36; loss .5 * .36
    assert loss.item() == pytest.approx(0.18) and stats["value_clip_fraction"] == 1.0


def test_entropy_of_a_uniform_distribution():
    assert entropy_from_logits(torch.zeros(1, 2, 4), torch.ones(1, 2)).item() == pytest.approx(math.log(4))
