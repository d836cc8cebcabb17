"""RL algorithms as small pure tensor functions behind registries: advantages, losses, KL estimators.

Shapes: per-token tensors are (batch, tokens) with a 0/1 `mask` over response tokens;
`group_ids` (batch,) says which prompt a sample belongs to. Every function is unit-tested
against numbers worked out by hand (tests/test_algos.py).
"""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {}
POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {}
KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
_EPSILON = 1e-8


def register(registry: dict, name: str) -> Callable:
    def add(function: Callable) -> Callable:
        registry[name] = function
        return function

    return add


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over the positions where mask is 1 (over everything, or along `dim`)."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mean) / std over the masked positions (population std); positions outside the mask become 0."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + _EPSILON)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + gamma * G_{t+1}, computed right to left over the masked tokens."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for position in reversed(range(rewards.shape[1])):
        running = rewards[:, position] + gamma * running * mask[:, position]
        returns[:, position] = running
    return returns * mask


@register(ADVANTAGE_ESTIMATORS, "reinforce_pp")
def reinforce_pp(rewards: Tensor, mask: Tensor, *, gamma: float = 1.0, **_: object) -> tuple[Tensor, Tensor]:
    """REINFORCE++: returns are discounted reverse sums of token rewards; advantages are the returns
    whitened over all valid tokens of the batch (no critic, no per-prompt baseline)."""
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


@register(ADVANTAGE_ESTIMATORS, "gae")
def gae(rewards: Tensor, mask: Tensor, *, values: Tensor, gamma: float = 1.0, lam: float = 0.95,
        whiten: bool = True, **_: object) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation with a critic: delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}; returns (targets of the value loss) are A_t + V_t."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for position in reversed(range(rewards.shape[1])):
        delta = rewards[:, position] + gamma * next_value - values[:, position]
        running = delta + gamma * lam * running
        running = running * mask[:, position]
        advantages[:, position] = running
        next_value = values[:, position] * mask[:, position] + next_value * (1 - mask[:, position])
    returns = (advantages + values) * mask
    return (masked_whiten(advantages, mask) if whiten else advantages), returns


def _sequence_scores(rewards: Tensor, mask: Tensor) -> Tensor:
    return (rewards * mask).sum(dim=1)


@register(ADVANTAGE_ESTIMATORS, "grpo")
def grpo(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, scale_by_std: bool = True,
         **_: object) -> tuple[Tensor, Tensor]:
    """GRPO: each sample's total reward minus its group's mean, divided by the group's std (sample std),
    given to every token of the sample."""
    scores = _sequence_scores(rewards, mask)
    advantages = torch.zeros_like(scores)
    for group in group_ids.unique():
        members = group_ids == group
        centred = scores[members] - scores[members].mean()
        spread = scores[members].std() if members.sum() > 1 else torch.tensor(0.0)
        advantages[members] = centred / (spread + 1e-6) if scale_by_std else centred
    return advantages[:, None] * mask, scores[:, None] * mask


@register(ADVANTAGE_ESTIMATORS, "rloo")
def rloo(rewards: Tensor, mask: Tensor, *, group_ids: Tensor, **_: object) -> tuple[Tensor, Tensor]:
    """RLOO: each sample's total reward minus the mean of the other samples of its group."""
    scores = _sequence_scores(rewards, mask)
    advantages = torch.zeros_like(scores)
    for group in group_ids.unique():
        members = group_ids == group
        count = int(members.sum())
        if count > 1:
            advantages[members] = scores[members] - (scores[members].sum() - scores[members]) / (count - 1)
    return advantages[:, None] * mask, scores[:, None] * mask


@register(KL_ESTIMATORS, "k1")
def kl_k1(logprobs: Tensor, reference_logprobs: Tensor) -> Tensor:
    """log p - log q: unbiased, can be negative per token."""
    return logprobs - reference_logprobs


@register(KL_ESTIMATORS, "k2")
def kl_k2(logprobs: Tensor, reference_logprobs: Tensor) -> Tensor:
    """(log p - log q)^2 / 2: low variance, always non-negative."""
    return 0.5 * (logprobs - reference_logprobs) ** 2


@register(KL_ESTIMATORS, "k3")
def kl_k3(logprobs: Tensor, reference_logprobs: Tensor) -> Tensor:
    """exp(log q - log p) - (log q - log p) - 1: unbiased and non-negative."""
    ratio = reference_logprobs - logprobs
    return torch.exp(ratio) - ratio - 1


def _aggregate(per_token: Tensor, mask: Tensor, aggregation: str) -> Tensor:
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence_mean":
        return masked_mean(per_token, mask, dim=1).mean()
    raise ValueError(f"unknown loss aggregation {aggregation!r}; use token_mean or sequence_mean")


@register(POLICY_LOSSES, "ppo_clip")
def ppo_clip_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, clip: float = 0.2,
                  aggregation: str = "token_mean") -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate: -min(r A, clip(r, 1-e, 1+e) A) with r = exp(log p - log p_old)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = _aggregate(torch.maximum(unclipped, clipped), mask, aggregation)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approximate_kl = masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)
    return loss, {"clip_fraction": float(clip_fraction), "approx_kl": float(approximate_kl)}


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *,
                       clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- e) - R)^2), averaged over valid tokens."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((values - returns) ** 2 < (clipped_values - returns) ** 2).float(), mask)
    return loss, {"value_clip_fraction": float(clip_fraction)}


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy of the token distributions over the valid positions."""
    log_probabilities = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(log_probabilities.exp() * log_probabilities).sum(-1)
    return masked_mean(entropy, mask)


def compute_advantages(name: str, rewards: Tensor, mask: Tensor, **settings: object) -> tuple[Tensor, Tensor]:
    """Advantages and returns by a registered estimator, with a clear error for an unknown name."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; choose from {', '.join(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name](rewards, mask, **settings)
