"""Tree-packed training forward: the trajectories of a micro-batch in one row, every shared token computed once.

Trajectories of one tree share their prompt and their first steps; a sampled group shares its prompt. Their
token sequences are merged into a prefix tree (a trie) and laid out depth first in one row: each unique token
once, its position id its depth, and an attention mask in which a token sees exactly its ancestors. In depth
first order token k is an ancestor-or-self of token q iff k <= q < leave[k], where leave[k] ends k's subtree.
Every trajectory token's state is then the very state it has in its own unpacked sequence, so per-trajectory
log-probs, values, entropies and losses (gathered back from the row) and their gradients equal the unpacked
batch's, up to floating-point summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from rftt.engine.batch import common_prefix_length
from rftt.train.rl_model import Entropy, ResponseForward, SequenceBatch, by_length, forward_responses

MASKED_ATTENTION = ("sdpa", "eager")  # attention implementations that take a custom 4D mask as given


@dataclass
class PackedRow:
    """Sequences merged into one depth-first row.

    `nodes[i][j]` is the row index of sequence i's token j; `leave[k]` is one past the last index of
    token k's subtree."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    leave: torch.Tensor
    nodes: list[list[int]]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]

    def sharing_ratio(self) -> float:
        """Unique tokens over all tokens of the packed sequences (1.0: nothing shared)."""
        return self.length / max(1, sum(len(sequence) for sequence in self.nodes))

    def attention_mask(self, implementation: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (1, 1, L, L) ancestor mask: boolean for SDPA, additive (0 or the dtype's minimum) for eager."""
        index = torch.arange(self.length)
        visible = (index[None, :] <= index[:, None]) & (index[:, None] < self.leave[None, :])
        if implementation == "eager":
            return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)[None, None]
        return visible[None, None]


def pack_sequences(sequences: Sequence[Sequence[int]]) -> PackedRow:
    """Merge token sequences into a prefix tree and lay it out depth first (children in order of first use)."""
    children: list[dict[int, int]] = [{}]  # node 0 is a virtual root above every sequence's first token
    tokens: list[int] = [-1]
    paths = []
    for sequence in sequences:
        node, path = 0, []
        for token in sequence:
            child = children[node].get(token)
            if child is None:
                child = len(tokens)
                children[node][token] = child
                children.append({})
                tokens.append(int(token))
            node = child
            path.append(node)
        paths.append(path)
    order, depth, leave = _depth_first(children)
    position = {node: index for index, node in enumerate(order)}
    return PackedRow(input_ids=torch.tensor([[tokens[node] for node in order]], dtype=torch.long),
                     position_ids=torch.tensor([[depth[node] for node in order]], dtype=torch.long),
                     leave=torch.tensor(leave, dtype=torch.long),
                     nodes=[[position[node] for node in path] for path in paths])


def _depth_first(children: list[dict[int, int]]) -> tuple[list[int], dict[int, int], list[int]]:
    """The trie's nodes below the root in depth-first order, each one's depth, and each one's subtree end."""
    order: list[int] = []
    depth: dict[int, int] = {}
    ends: dict[int, int] = {}
    stack: list[tuple[int, int, bool]] = [(child, 0, False) for child in reversed(children[0].values())]
    while stack:
        node, level, closing = stack.pop()
        if closing:
            ends[node] = len(order)
            continue
        depth[node] = level
        order.append(node)
        stack.append((node, level, True))
        stack.extend((child, level + 1, False) for child in reversed(children[node].values()))
    return order, depth, [ends[node] for node in order]


def batch_sequences(batch: SequenceBatch) -> list[list[int]]:
    """Each row's tokens without its left padding (prompt + response)."""
    return [row[mask.bool()].tolist() for row, mask in zip(batch.input_ids.cpu(), batch.attention_mask.cpu())]


def predecessor_slots(packed: PackedRow, batch: SequenceBatch) -> torch.Tensor:
    """(rows, width): the row index of the token before each response token (the state that predicts it),
    right-aligned like `batch.response_ids`; 0 where `response_mask` is 0."""
    response_lengths = batch.response_mask.sum(1).long().tolist()
    slots = torch.zeros(batch.response_mask.shape, dtype=torch.long)
    for row, (path, response_length) in enumerate(zip(packed.nodes, response_lengths)):
        if response_length:
            start = len(path) - response_length
            slots[row, batch.width - response_length :] = torch.tensor(path[start - 1 : len(path) - 1])
    return slots


def forward_packed(model: nn.Module, batch: SequenceBatch, value_head: nn.Module | None = None,
                   entropy: Entropy = "none", attention: str = "sdpa") -> ResponseForward:
    """`forward_responses` with the batch's rows packed into one row: the same log-probs, values and mean entropy.
    The output layer runs only at the states that predict a response token, each once."""
    packed = pack_sequences(batch_sequences(batch))
    slots = predecessor_slots(packed, batch)
    mask_cpu = batch.response_mask.cpu()
    # the states the output layer runs at (the first token's when no row has a response, to keep shapes valid)
    kept, where = torch.unique(torch.cat([slots[mask_cpu.bool()], slots.new_zeros(1)]), sorted=True,
                               return_inverse=True)
    slot_index = torch.zeros_like(slots)
    slot_index[mask_cpu.bool()] = where[:-1]
    device = next(model.parameters()).device
    output = model(input_ids=packed.input_ids.to(device), position_ids=packed.position_ids.to(device),
                   attention_mask=packed.attention_mask(attention).to(device), logits_to_keep=kept.to(device),
                   output_hidden_states=value_head is not None, use_cache=False)
    logits = output.logits[0].float()
    log_probabilities = torch.log_softmax(logits, dim=-1)
    slot_index, response_mask = slot_index.to(device), batch.response_mask.to(device)
    chosen = log_probabilities[slot_index, batch.response_ids.to(device)]
    logprobs = chosen * response_mask
    values = None
    if value_head is not None:
        values = value_head(output.hidden_states[-1][0, kept.to(device)])[slot_index] * response_mask
    mean_entropy = None
    if entropy != "none":
        source = log_probabilities if entropy == "trained" else log_probabilities.detach()
        per_state = -(source.exp() * source).sum(-1)
        mean_entropy = (per_state[slot_index] * response_mask).sum() / response_mask.sum().clamp(min=1)
    return ResponseForward(logprobs, values, mean_entropy)


def packing_unsupported(model: Any) -> str | None:
    """Why packing would not be exact for this model (its attention ignores a custom mask, or a sliding window
    would change what a token sees), or None where it is exact."""
    config = model.config
    implementation = attention_implementation(model)
    if implementation not in MASKED_ATTENTION:
        return f"attention implementation {implementation!r} does not take a custom 4D mask"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    return None


def attention_implementation(model: Any) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def by_prefix(batch: SequenceBatch, rows: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """`rows` in micro-batches whose packed rows hold at most `budget` unique tokens (at least one row each),
    rows sorted by their tokens so that trajectories sharing a prefix fall into the same micro-batch."""
    sequences = batch_sequences(batch)
    ordered = sorted(rows.tolist(), key=lambda row: sequences[row])
    chunks: list[list[int]] = []
    packed_tokens = 0
    for previous, row in zip([None, *ordered], ordered):
        shared = 0 if previous is None else common_prefix_length(sequences[previous], sequences[row])
        added = len(sequences[row]) - shared
        if chunks and packed_tokens + added <= budget:
            chunks[-1].append(row)
            packed_tokens += added
        else:
            chunks.append([row])
            packed_tokens = len(sequences[row])
    return [torch.tensor(chunk, dtype=torch.long) for chunk in chunks]


@dataclass(frozen=True)
class TrainingForward:
    """How RL runs its forward passes: packed micro-batches (`attention` set: the model's attention
    implementation) or padded ones, one row per trajectory, of similar length (`attention` None).
    `packed_tokens`: unique tokens per packed micro-batch (None: `micro_batch_size` of the step's longest sequence)."""

    micro_batch_size: int
    attention: str | None = None
    packed_tokens: int | None = None

    @classmethod
    def for_model(cls, model: Any, micro_batch_size: int, packing: bool,
                  packed_tokens: int | None = None) -> "TrainingForward":
        """Packed where asked for and exact for `model`; otherwise padded, saying why when packing was asked for."""
        reason = packing_unsupported(model) if packing else None
        if reason is not None:
            print(f"tree_packing: off for this model ({reason})")
        attention = attention_implementation(model) if packing and reason is None else None
        return cls(micro_batch_size, attention, packed_tokens)

    def __call__(self, model: nn.Module, batch: SequenceBatch, value_head: nn.Module | None = None,
                 entropy: Entropy = "none") -> ResponseForward:
        if self.attention is None:
            return forward_responses(model, batch, value_head, entropy)
        return forward_packed(model, batch, value_head, entropy, attention=self.attention)

    def micro_batches(self, batch: SequenceBatch, rows: torch.Tensor) -> list[torch.Tensor]:
        """Packed: rows sharing prefixes, at most `packed_tokens` unique tokens per micro-batch; padded:
        `micro_batch_size` rows of similar length."""
        if self.attention is None:
            return by_length(batch, rows, self.micro_batch_size)
        return by_prefix(batch, rows, self.packed_tokens or self.micro_batch_size * int(batch.lengths().max()))
