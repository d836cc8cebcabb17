"""The decoding batch of the hf engine: its rows' state, and the operations on rows and KV cache together.

Rows are left-padded; `_Rows` holds what each live row needs to take its next step.
Finished rows are dropped (with the leading columns that became padding in every row),
two batches are joined for continuous batching, and prompts that share a long prefix
are grouped so the prefix is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


@dataclass
class Rows:
    """The decoding state of the rows still in the batch (indices into the chunk's rows)."""

    index: torch.Tensor
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor
    finished: torch.Tensor
    steps: torch.Tensor


def _common_length(first: Sequence[int], second: Sequence[int]) -> int:
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
            shared = min(length, own, _common_length(prompts[members[0]], prompts[index]))
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
                 rows.steps[kept]), cache


def join(rows: Rows, cache: DynamicCache, new_rows: Rows, new_cache: DynamicCache) -> tuple[Rows, DynamicCache]:
    """One batch of two, their caches and masks left-padded to the same width."""
    width = max(rows.attention_mask.shape[1], new_rows.attention_mask.shape[1])

    def widen(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - tensor.shape[dim]
        if missing == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = missing
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    layers = [(torch.cat([widen(old.keys, 2), widen(new.keys, 2)]), torch.cat([widen(old.values, 2), widen(new.values, 2)]))
              for old, new in zip(cache.layers, new_cache.layers)]
    joined = Rows(*(torch.cat([old, new]) for old, new in (
        (rows.index, new_rows.index), (widen(rows.attention_mask, 1), widen(new_rows.attention_mask, 1)),
        (rows.next_position, new_rows.next_position), (rows.logits, new_rows.logits), (rows.finished, new_rows.finished),
        (rows.steps, new_rows.steps))))
    return joined, DynamicCache(layers, config=None)


def plain_cache_layers(model: PreTrainedModel) -> bool:
    """Whether every layer of the model's KV cache is a plain full-attention layer."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
