"""Tree-packed forward: the same log-probs, values, entropy and gradients as the unpacked batch."""

from __future__ import annotations

import pytest
import torch

from rftt.train.packing import TrainingForward, by_prefix, forward_packed, pack_sequences, packing_unsupported
from rftt.train.rl_model import ValueHead, build_sequences, forward_responses

from conftest import build_tiny_model

VOCABULARY = 50
PAD = 0

# a tree: one prompt, trajectories sharing their first steps, branching at different depths
TREE = ([[5, 6, 7, 8]] * 4, [[9, 10, 11, 12], [9, 10, 13], [9, 14, 15, 16, 17], [9, 10, 11, 18, 19]])
# a sampled group: one prompt, responses sharing nothing
GROUP = ([[5, 6, 7]] * 3, [[20, 21], [22, 23, 24], [25]])
# two trees, prompts of different lengths and responses of different lengths (left padding in the inputs and in
# the right-aligned response window), one empty response
FOREST = ([[5, 6], [5, 6], [30, 31, 32, 33, 34], [30, 31, 32, 33, 34]], [[7, 8, 9], [7], [35, 36], []])
LONE = ([[5, 6, 7, 8, 9]], [[10, 11, 12]])
CASES = {"tree": TREE, "group": GROUP, "forest": FOREST, "lone": LONE}


def model_for(implementation: str) -> torch.nn.Module:
    model = build_tiny_model(VOCABULARY)
    model.config._attn_implementation = implementation
    return model.eval()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_log_probs_values_and_entropy_equal_the_unpacked(case, implementation):
    model = model_for(implementation)
    torch.manual_seed(1)
    head = ValueHead(model.config.hidden_size)
    batch = build_sequences(*CASES[case], pad_id=PAD)
    with torch.no_grad():
        plain = forward_responses(model, batch, head, entropy="logged")
        packed = forward_packed(model, batch, head, entropy="logged", attention=implementation)
    assert packed.logprobs.shape == plain.logprobs.shape
    torch.testing.assert_close(packed.logprobs, plain.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.values, plain.values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.entropy, plain.entropy, atol=1e-5, rtol=1e-5)
    assert plain.logprobs[batch.response_mask.bool()].abs().min() > 0  # the comparison covers every response token


def gradients(model: torch.nn.Module, head: torch.nn.Module, forward, batch, weights: torch.Tensor) -> torch.Tensor:
    """The flattened gradient of a loss built from every output a PPO step uses."""
    model.zero_grad()
    head.zero_grad()
    result = forward(model, batch, head, entropy="trained")
    loss = (result.logprobs * weights).sum() + (result.values ** 2 * weights).sum() - 0.1 * result.entropy
    loss.backward()
    return torch.cat([parameter.grad.flatten() for parameter in [*model.parameters(), *head.parameters()]])


@pytest.mark.parametrize("case", ["tree", "forest"])
def test_packed_gradients_equal_the_unpacked(case):
    model = model_for("sdpa").train()
    torch.manual_seed(2)
    head = ValueHead(model.config.hidden_size)
    batch = build_sequences(*CASES[case], pad_id=PAD)
    weights = torch.randn(batch.response_mask.shape) * batch.response_mask
    plain = gradients(model, head, forward_responses, batch, weights)
    packed = gradients(model, head, forward_packed, batch, weights)
    assert plain.norm() > 0
    assert float((packed - plain).norm() / plain.norm()) < 1e-5


def test_a_tree_is_packed_once_per_unique_token_with_depth_positions():
    packed = pack_sequences([[1, 2, 3], [1, 2, 4, 5], [1, 6]])
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 2, 3, 1]]
    assert packed.leave.tolist() == [6, 5, 3, 5, 5, 6]
    assert packed.nodes == [[0, 1, 2], [0, 1, 3, 4], [0, 5]]
    assert packed.sharing_ratio() == pytest.approx(6 / 9)
    visible = packed.attention_mask("sdpa")[0, 0]
    assert visible[4].tolist() == [True, True, False, True, True, False]  # token 5 sees 1, 2, 4 and itself
    assert visible[2].tolist() == [True, True, True, False, False, False]  # the sibling branch is hidden


def test_separate_trees_do_not_see_each_other():
    packed = pack_sequences([[1, 2], [3, 4]])
    visible = packed.attention_mask("sdpa")[0, 0]
    assert visible.tolist() == [[True, False, False, False], [True, True, False, False],
                                [False, False, True, False], [False, False, True, True]]
    assert packed.position_ids.tolist() == [[0, 1, 0, 1]]


def test_the_eager_mask_is_additive():
    mask = pack_sequences([[1, 2], [1, 3]]).attention_mask("eager")[0, 0]
    assert mask[2, 1] == torch.finfo(torch.float32).min and mask[2, 0] == 0 and mask[2, 2] == 0


def test_micro_batches_keep_shared_prefixes_together_within_the_token_budget():
    prompts = [[1, 2, 3, 4]] * 3 + [[9, 9, 9, 9]] * 3
    responses = [[5], [6], [7], [5], [6], [7]]
    batch = build_sequences([prompts[i] for i in (0, 3, 1, 4, 2, 5)], [responses[i] for i in (0, 3, 1, 4, 2, 5)],
                            pad_id=PAD)
    chunks = by_prefix(batch, torch.arange(6), budget=7)  # one prompt (4) and its three responses (3) fit
    assert [sorted(chunk.tolist()) for chunk in chunks] == [[0, 2, 4], [1, 3, 5]]
    assert [len(chunk) for chunk in by_prefix(batch, torch.arange(6), budget=1)] == [1] * 6


def test_packing_is_refused_where_it_would_not_be_exact():
    model = model_for("sdpa")
    assert packing_unsupported(model) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in packing_unsupported(model)


def test_the_packed_token_budget_sets_the_micro_batches():
    batch = build_sequences([[1, 2, 3, 4]] * 4, [[5], [6], [7], [8]], pad_id=PAD)
    default = TrainingForward(micro_batch_size=2, attention="sdpa")  # 2 x 5 tokens: the shared prompt and 6 more
    assert [len(chunk) for chunk in default.micro_batches(batch, torch.arange(4))] == [4]
    small = TrainingForward(micro_batch_size=2, attention="sdpa", packed_tokens=6)
    assert [len(chunk) for chunk in small.micro_batches(batch, torch.arange(4))] == [2, 2]
    padded = TrainingForward(micro_batch_size=2)
    assert [len(chunk) for chunk in padded.micro_batches(batch, torch.arange(4))] == [2, 2]
