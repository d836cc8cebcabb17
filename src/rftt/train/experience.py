"""One RL step's data as one typed record, from the rollout to the update (OpenRLHF's `Experience`, veRL's
`DataProto` for one step): the trajectories, their token sequences and rewards, the old policy's and the reference
model's log-probs, the critic's values, and the advantages and returns the update trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rftt.train.rl_model import ResponseForward, SequenceBatch
from rftt.train.rollouts import TrajectoryBatch


@dataclass
class Experience:
    """A step's trajectories ready for the update. `old` holds the old policy's log-probs and values; when
    `old_is_current` (one update on the whole batch, nothing but the ratio needing them) there was no separate
    pass: the update's own detached log-probs serve, and `kl` (a per-token estimate against the reference,
    None without a KL term) is set from them once the update has run."""

    batch: TrajectoryBatch
    sequences: SequenceBatch
    rewards: torch.Tensor
    old: ResponseForward
    reference_logprobs: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor
    old_is_current: bool
    kl: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """Which positions of the per-token tensors are response tokens."""
        return self.sequences.response_mask


@dataclass
class UpdateResult:
    """What an update reports: its metrics and, when the old log-probs were its own, those log-probs."""

    metrics: dict[str, float]
    old_logprobs: torch.Tensor | None
