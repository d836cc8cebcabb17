"""The models of online RL: policy, frozen reference, critic; and per-token log-probs of responses.

Sequences are left-padded `prompt + response`, so every response ends at the right edge;
only the last `R + 1` positions (R = longest response) go through the output layer, which
keeps the (samples x tokens x vocabulary) logits small. Per-token tensors are (samples, R)
with each response right-aligned and `response_mask` marking its tokens.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
from torch import nn

from rftt.algos import entropy_from_logits


class ValueHead(nn.Module):
    """A linear critic on the last hidden state (ReFT: shared with the policy's backbone)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.float()).squeeze(-1)


@dataclass
class SequenceBatch:
    """Prompt + response token ids, left-padded, and the right-aligned response window of width R."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    @property
    def width(self) -> int:
        return self.response_ids.shape[1]

    def rows(self, index: torch.Tensor | slice) -> "SequenceBatch":
        """Some rows, without the columns that are padding in all of them: the leading input columns, and the
        response window narrowed to their longest response (still right-aligned, so a per-token tensor of the
        whole batch matches these rows in its last `width` columns)."""
        attention_mask = self.attention_mask[index]
        first = int(attention_mask.any(0).long().argmax()) if attention_mask.numel() else 0
        response_mask = self.response_mask[index]
        width = max(1, int(response_mask.sum(1).max())) if response_mask.numel() else self.width
        return SequenceBatch(self.input_ids[index][:, first:], attention_mask[:, first:],
                             self.position_ids[index][:, first:], self.response_ids[index][:, -width:],
                             response_mask[:, -width:])

    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(1)

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(*(tensor.to(device) for tensor in (self.input_ids, self.attention_mask, self.position_ids,
                                                                 self.response_ids, self.response_mask)))


def build_sequences(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
                    device: torch.device | str = "cpu") -> SequenceBatch:
    """Left-padded sequences; empty responses get one padding token with mask 0, so shapes stay valid."""
    width = max(1, max(len(response) for response in responses))
    length = max(len(prompt) + max(len(response), 1) for prompt, response in zip(prompts, responses))
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(prompts), width))
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        sequence = list(prompt) + (list(response) or [pad_id])
        input_ids[row, length - len(sequence) :] = torch.tensor(sequence)
        attention_mask[row, length - len(sequence) :] = 1
        if response:
            response_ids[row, width - len(response) :] = torch.tensor(response)
            response_mask[row, width - len(response) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return SequenceBatch(input_ids.to(device), attention_mask.to(device), position_ids.to(device),
                         response_ids.to(device), response_mask.to(device))


@dataclass
class ResponseForward:
    logprobs: torch.Tensor
    values: torch.Tensor | None
    entropy: torch.Tensor | None


Entropy = Literal["none", "logged", "trained"]
"""Whether a forward pass gives the responses' mean entropy: not at all, for the log alone (off the graph), or with
a gradient (an entropy bonus)."""


def forward_responses(model: nn.Module, batch: SequenceBatch, value_head: nn.Module | None = None,
                      entropy: Entropy = "none") -> ResponseForward:
    """Log-probs of each response token (and the critic's values, and the mean entropy) in one forward pass,
    on the model's device (the batch's bookkeeping may stay on the CPU)."""
    batch, width = batch.to(next(model.parameters()).device), batch.width
    output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                   logits_to_keep=width + 1, output_hidden_states=value_head is not None, use_cache=False)
    logits = output.logits[:, :-1].float()
    chosen = logits.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    logprobs = (chosen - torch.logsumexp(logits, dim=-1)) * batch.response_mask
    values = None
    if value_head is not None:
        values = value_head(output.hidden_states[-1][:, -(width + 1) : -1]) * batch.response_mask
    mean_entropy = None if entropy == "none" else entropy_from_logits(
        logits if entropy == "trained" else logits.detach(), batch.response_mask)
    return ResponseForward(logprobs, values, mean_entropy)


def by_length(batch: SequenceBatch, rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` in chunks of `size`, shortest sequences first, so each chunk pads only to its own longest."""
    ordered = rows[torch.argsort(batch.lengths()[rows], stable=True)]
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def micro_batch_share(response_mask: torch.Tensor, rows: torch.Tensor, mini: torch.Tensor, aggregation: str) -> float:
    """A micro-batch's weight in its mini-batch's loss: its share of the response tokens (token mean) or of the
    sequences (sequence mean), so the weighted sum of micro-batch means is the mini-batch's own mean."""
    if aggregation == "token_mean":
        return float(response_mask[rows].sum() / response_mask[mini].sum().clamp(min=1))
    return len(rows) / len(mini)


def forward_in_chunks(model: nn.Module, batch: SequenceBatch, chunks: Sequence[torch.Tensor],
                      value_head: nn.Module | None = None,
                      forward: Callable[..., ResponseForward] = forward_responses) -> ResponseForward:
    """`forward` (`forward_responses` or the packed one) without gradients, one chunk of rows at a time (from
    `by_length` or `by_prefix`), as full-width tensors."""
    rows = batch.input_ids.shape[0]
    logprobs = torch.zeros((rows, batch.width))
    values = torch.zeros((rows, batch.width)) if value_head is not None else None
    with torch.no_grad():
        for chunk in chunks:
            result = forward(model, batch.rows(chunk), value_head)
            width = result.logprobs.shape[1]
            logprobs[chunk, -width:] = result.logprobs.to(logprobs.device)
            if values is not None and result.values is not None:
                values[chunk, -width:] = result.values.to(values.device)
    return ResponseForward(logprobs, values, None)


class ReferenceModel:
    """The frozen start point: with LoRA, the policy with its adapters switched off (no second copy);
    otherwise a frozen copy of the policy taken before training."""

    def __init__(self, policy: nn.Module, uses_lora: bool):
        self.policy = policy
        self.copy = None if uses_lora else copy.deepcopy(policy).eval().requires_grad_(False)

    def to(self, device: torch.device) -> None:
        """Put the copy (if any) where the policy computes."""
        if self.copy is not None:
            self.copy.to(device)

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        if self.copy is not None:
            yield self.copy
            return
        context = self.policy.disable_adapter() if hasattr(self.policy, "disable_adapter") else nullcontext()
        with context:
            yield self.policy


def hidden_size(model: Any) -> int:
    config = model.config if hasattr(model, "config") else model.get_base_model().config
    return int(config.hidden_size)
