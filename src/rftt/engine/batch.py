"""The decoding batch of the hf engine: its rows' state, and the operations on rows and KV cache together.

Rows are left-padded; `Rows` holds what each live row needs to take its next step,
`StreamQueue` the requests of a stream and `Outputs` every row's sampled tokens.
Finished rows are dropped (with the leading columns that became padding in every row),
two batches are joined for continuous batching, and prompts that share a long prefix
are grouped so the prefix is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from rftt.engine.base import stream_limit
from rftt.engine.types import SamplingParams, StreamRequest

GROWTH_STEPS = 64


@dataclass
class Rows:
    """The decoding state of the rows still in the batch (indices into the chunk's rows)."""

    index: torch.Tensor
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor
    finished: torch.Tensor
    steps: torch.Tensor
    limit: torch.Tensor  # each row's max_new_tokens


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


def shared_prefix_groups(prompts: Sequence[Sequence[int]], minimum: int) -> list[tuple[int, list[int]]]:
    """Prompts grouped by a shared prefix of at least `minimum` tokens, as (prefix length, prompt indices).

    Every prompt keeps at least its last token outside the prefix; a prompt that shares
    with none forms a group of its own whose prefix is all but its last token.
    """
    groups: list[tuple[int, list[int]]] = []
    for index in sorted(range(len(prompts)), key=lambda position: list(prompts[position])):
        own = len(prompts[index]) - 1
        if groups:
            length, members = groups[-1]
            shared = min(length, own, common_prefix_length(prompts[members[0]], prompts[index]))
            if shared >= minimum:
                groups[-1] = (shared, members + [index])
                continue
        groups.append((own, [index]))
    return groups


def drop_finished(rows: Rows, cache: DynamicCache, trim: bool) -> tuple[Rows, DynamicCache]:
    """The batch without its finished rows; with `trim` (plain cache layers only), also without leading
    columns that are padding in every row."""
    kept = (~rows.finished).nonzero().flatten()
    cache.batch_select_indices(kept)
    attention_mask = rows.attention_mask[kept]
    first = int(attention_mask.any(0).long().argmax()) if trim and kept.numel() else 0
    if first > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        attention_mask = attention_mask[:, first:]
    return Rows(rows.index[kept], attention_mask, rows.next_position[kept], rows.logits[kept], rows.finished[kept],
                rows.steps[kept], rows.limit[kept]), cache


def join(rows: Rows, cache: DynamicCache, new_rows: Rows, new_cache: DynamicCache) -> tuple[Rows, DynamicCache]:
    """One batch of two (in the first one's cache object), caches and masks left-padded to the same width."""
    width = max(rows.attention_mask.shape[1], new_rows.attention_mask.shape[1])

    def widen(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - tensor.shape[dim]
        if missing == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = missing
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    joined = Rows(*(torch.cat([old, new]) for old, new in (
        (rows.index, new_rows.index), (widen(rows.attention_mask, 1), widen(new_rows.attention_mask, 1)),
        (rows.next_position, new_rows.next_position), (rows.logits, new_rows.logits), (rows.finished, new_rows.finished),
        (rows.steps, new_rows.steps), (rows.limit, new_rows.limit))))
    for old, new in zip(cache.layers, new_cache.layers):
        old.keys = torch.cat([widen(old.keys, 2), widen(new.keys, 2)])
        old.values = torch.cat([widen(old.values, 2), widen(new.values, 2)])
    return joined, cache


class GrowingLayer(DynamicLayer):
    """A plain cache layer that appends each step's keys and values into spare room it keeps after them,
    instead of concatenating the whole cache at every step (one copy per `GROWTH_STEPS` steps)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or self.keys.numel() == 0:
            return super().update(key_states, value_states, *args, **kwargs)
        length, added = self.keys.shape[-2], key_states.shape[-2]
        room = getattr(self, "_room", None)
        if (room is None or room[0].data_ptr() != self.keys.data_ptr() or room[0].shape[:2] != self.keys.shape[:2]
                or room[0].shape[-2] < length + added):  # the cache was replaced, reshaped or is full: move it
            room = tuple(tensor.new_empty((*tensor.shape[:2], length + added + GROWTH_STEPS, tensor.shape[-1]))
                         for tensor in (self.keys, self.values))
            room[0][:, :, :length], room[1][:, :, :length] = self.keys, self.values
            self._room = room
        room[0][:, :, length : length + added], room[1][:, :, length : length + added] = key_states, value_states
        self.keys, self.values = room[0][:, :, : length + added], room[1][:, :, : length + added]
        return self.keys, self.values


def new_cache(config: Any, growing: bool, filled: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> DynamicCache:
    """An empty KV cache for the model (plain layers growing in place when `growing`), or one holding `filled`
    keys and values per layer."""
    cache = DynamicCache(config=config)
    if growing:
        cache.layers = [GrowingLayer() for _ in cache.layers]
    for layer, (keys, values) in zip(cache.layers, filled):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return cache


def plain_cache_layers(model: PreTrainedModel) -> bool:
    """Whether every layer of the model's KV cache is a plain full-attention layer."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


class StreamQueue:
    """The requests of one stream: their prompts, sample counts and limits, which rows are whose, and which
    requests still wait for room in the batch (each fed batch shortest prompt first, batches in order)."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.prompts: list[list[int]] = []
        self.samples: list[int] = []
        self.limits: list[int] = []
        self.first_row: list[int] = []
        self.owners: list[tuple[int, int]] = []  # per row: (request number, sample)
        self.waiting: list[int] = []

    def add(self, requests: Sequence[StreamRequest]) -> None:
        numbers = []
        for request in requests:
            number = len(self.prompts)
            self.prompts.append(list(request.prompt))
            self.samples.append(request.n)
            self.limits.append(stream_limit(request, self.params))
            self.first_row.append(len(self.owners))
            self.owners.extend((number, sample) for sample in range(request.n))
            numbers.append(number)
        self.waiting.extend(sorted(numbers, key=lambda number: len(self.prompts[number])))

    def rows_of(self, number: int) -> range:
        return range(self.first_row[number], self.first_row[number] + self.samples[number])

    def waiting_rows(self) -> int:
        return sum(self.samples[number] for number in self.waiting)


class Outputs:
    """Every row's sampled tokens and their log-probabilities (and, when asked, each step's most likely tokens),
    growing as requests arrive."""

    def __init__(self, width: int, pad_id: int, device: torch.device, top_logprobs: int = 0):
        self.pad_id = pad_id
        self.tokens = torch.full((0, width), pad_id, dtype=torch.long, device=device)
        self.logprobs = torch.zeros((0, width), device=device)
        self.top_ids = torch.zeros((0, width, top_logprobs), dtype=torch.long, device=device)
        self.top_values = torch.zeros((0, width, top_logprobs), device=device)

    def reserve(self, rows: int) -> None:
        if rows <= self.tokens.shape[0]:
            return
        extra = max(rows, 2 * self.tokens.shape[0]) - self.tokens.shape[0]
        self.tokens = torch.cat([self.tokens, self.tokens.new_full((extra, self.tokens.shape[1]), self.pad_id)])
        self.logprobs, self.top_ids, self.top_values = (
            torch.cat([buffer, buffer.new_zeros((extra, *buffer.shape[1:]))])
            for buffer in (self.logprobs, self.top_ids, self.top_values))

    def record(self, rows: torch.Tensor, steps: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor,
               live: torch.Tensor) -> None:
        """Write each live row's new token at its step, with its log-probability under the model (and the top
        ones). Whole-batch operations only: no boolean indexing (a host sync on a GPU), no copy of the logits, and
        the log-probability is the chosen logit less the row's log-sum-exp (no full distribution is written)."""
        steps = steps.clamp(max=self.tokens.shape[1] - 1)  # a finished row's step may be its limit: left unchanged

        def write(buffer: torch.Tensor, values: torch.Tensor) -> None:
            mask = live.view(-1, *[1] * (values.dim() - 1))
            buffer[rows, steps] = torch.where(mask, values, buffer[rows, steps])

        write(self.tokens, tokens)
        write(self.logprobs, logits.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1))
        if self.top_ids.shape[-1]:
            values, ids = torch.topk(torch.log_softmax(logits, dim=-1), self.top_ids.shape[-1], dim=-1)
            write(self.top_ids, ids)
            write(self.top_values, values)

    def top(self, row: int, length: int) -> list[list[tuple[int, float]]] | None:
        """A row's most likely tokens at each of its first `length` steps (None when not recorded)."""
        if not self.top_ids.shape[-1]:
            return None
        return [list(zip(ids, values)) for ids, values in zip(self.top_ids[row, :length].tolist(),
                                                             self.top_values[row, :length].tolist())]
