"""The hf engine on a tiny random model, checked against plain forward passes."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from rftt.engine import EngineError, SamplingParams, StreamRequest, make_engine
from rftt.engine.sampling import filter_logits, sample_tokens

PROMPTS = ["the answer is", "clarify the question and what is asked then", "12 +", "verify the previous steps, refine"]


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    return make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer)


def manual_greedy(model, tokenizer, prompt: str, steps: int, stop_ids: set[int]) -> list[int]:
    """Argmax decoding with a full forward pass per step, no cache, no padding."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids + generated])).logits[0, -1]
            generated.append(int(logits.argmax()))
            if generated[-1] in stop_ids:
                break
    return generated


def forward_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0].float()
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(completion_ids) - 1)
    return torch.log_softmax(logits[positions], dim=-1).gather(1, torch.tensor(completion_ids)[:, None]).squeeze(1)


def assert_same_completions(got, expected) -> None:
    """Same tokens, text and finish; log-probs equal up to the float noise of another batch layout."""
    assert len(got) == len(expected)
    for got_samples, expected_samples in zip(got, expected):
        assert [(c.text, c.token_ids, c.finish_reason, c.stop_reason) for c in got_samples] == [
            (c.text, c.token_ids, c.finish_reason, c.stop_reason) for c in expected_samples]
        for a, b in zip(got_samples, expected_samples):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def test_greedy_equals_a_manual_argmax_loop(engine, tiny_model, tiny_tokenizer):
    results = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    for prompt, [completion] in zip(PROMPTS, results):
        expected = manual_greedy(tiny_model, tiny_tokenizer, prompt, 12, {tiny_tokenizer.eos_token_id})
        assert completion.token_ids == expected
        assert completion.finish_reason == ("stop" if expected[-1] == tiny_tokenizer.eos_token_id else "length")


def test_decoding_passes_the_cache_by_the_name_the_model_takes(engine):
    """transformers 5.2x deprecates `past_key_values` (removed in 5.40): the engine must not use the old name."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        completions = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=4))
    assert [len(samples[0].token_ids) for samples in completions] == [4, 4]


def test_a_lora_wrapped_model_takes_the_cache_by_its_base_models_name(tiny_model):
    from peft import LoraConfig, get_peft_model

    from rftt.engine.hf import cache_keyword

    wrapped = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert cache_keyword(wrapped) == cache_keyword(tiny_model)
    assert "cache" not in inspect.signature(wrapped.forward).parameters  # the wrapper's own signature would mislead


def test_token_id_prompts_equal_text_prompts(engine, tiny_tokenizer):
    ids = [tiny_tokenizer.encode(prompt, add_special_tokens=False) for prompt in PROMPTS]
    params = SamplingParams(max_new_tokens=8)
    assert_same_completions(engine.generate(ids, params), engine.generate(PROMPTS, params))


def test_a_stop_id_ends_the_sequence_on_that_token(engine, tiny_model, tiny_tokenizer):
    expected = manual_greedy(tiny_model, tiny_tokenizer, PROMPTS[1], 12, set())
    stop_id = expected[5]
    first = expected.index(stop_id)
    [[completion]] = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=12, stop_token_ids=(stop_id,), ignore_eos=True))
    assert completion.token_ids == expected[: first + 1]
    assert (completion.finish_reason, completion.stop_reason) == ("stop", stop_id)


def test_a_stop_string_cuts_the_text_exactly(engine, tiny_model, tiny_tokenizer):
    expected = manual_greedy(tiny_model, tiny_tokenizer, PROMPTS[0], 16, set())
    full_text = tiny_tokenizer.decode(expected)
    stop = full_text[len(full_text) // 2 : len(full_text) // 2 + 2]
    assert stop.strip(), full_text
    [[completion]] = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16, stop=(stop,), ignore_eos=True))
    assert completion.text == full_text[: full_text.index(stop)]
    assert completion.stop_reason == stop and completion.finish_reason == "stop"
    decoded = tiny_tokenizer.decode(completion.token_ids)
    assert stop in decoded and stop not in tiny_tokenizer.decode(completion.token_ids[:-1])


def test_rows_that_stop_early_leave_the_others_exact(engine, tiny_model, tiny_tokenizer):
    """Finished rows are dropped from the batch mid-way; the rows that go on must not change."""
    stop_id = manual_greedy(tiny_model, tiny_tokenizer, PROMPTS[0], 3, set())[1]
    params = SamplingParams(max_new_tokens=14, stop_token_ids=(stop_id,), ignore_eos=True)
    for prompt, [completion] in zip(PROMPTS, engine.generate(PROMPTS, params)):
        assert completion.token_ids == manual_greedy(tiny_model, tiny_tokenizer, prompt, 14, {stop_id})


def test_logprobs_match_a_separate_forward_pass(engine, tiny_model, tiny_tokenizer):
    params = SamplingParams(n=3, temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=10, seed=0)
    for prompt, samples in zip(PROMPTS, engine.generate(PROMPTS, params)):
        assert len(samples) == 3
        prompt_ids = tiny_tokenizer.encode(prompt, add_special_tokens=False)
        for completion in samples:
            expected = forward_logprobs(tiny_model, prompt_ids, completion.token_ids)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_samples_are_reproducible_under_a_seed(engine):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=7)
    first, again = engine.generate(PROMPTS[:2], params), engine.generate(PROMPTS[:2], params)
    other = engine.generate(PROMPTS[:2], SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=8))
    assert first == again and first != other
    assert len({tuple(completion.token_ids) for completion in first[0]}) > 1


def test_chunking_to_a_memory_bound_gives_the_same_answers(tiny_model, tiny_tokenizer, engine):
    small = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, max_batch_rows=2, max_batch_tokens=40)
    params = SamplingParams(n=2, max_new_tokens=8)
    assert_same_completions(small.generate(PROMPTS, params), engine.generate(PROMPTS, params))
    assert small._chunks([5, 30, 6, 7], 2, 8) == [[0], [2], [3], [1]]


def test_next_token_logprobs_match_a_forward_pass(engine, tiny_model, tiny_tokenizer):
    candidates = [3, 17, 42]
    got = engine.next_token_logprobs(PROMPTS, candidates)
    for prompt, row in zip(PROMPTS, got):
        ids = tiny_tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            expected = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0, -1].float(), -1)[candidates]
        torch.testing.assert_close(torch.tensor(row), expected, atol=1e-4, rtol=1e-4)


def test_next_token_logprobs_through_the_prefix_cache_are_the_same_and_leave_the_prefixes_cached(
        tiny_model, tiny_tokenizer):
    tiny_model.eval()
    stem = "clarify the question and what is asked then analyze the problem then take the next step " * 3
    prefixes = [f"{stem} 12 +", f"{stem} the answer is"]
    cached = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, prefix_cache_mib=64)
    uncached = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer)
    for _ in range(2):
        torch.testing.assert_close(torch.tensor(cached.next_token_logprobs(prefixes, [3, 17, 42])),
                                   torch.tensor(uncached.next_token_logprobs(prefixes, [3, 17, 42])), atol=1e-4, rtol=1e-4)
    stem_tokens = len(tiny_tokenizer.encode(stem, add_special_tokens=False))
    assert cached.prefix_cache.hit_tokens >= 2 * (stem_tokens // 16 * 16)
    hits = cached.prefix_cache.hit_tokens
    cached.generate([f"{stem} 12 + 3"], SamplingParams(max_new_tokens=2))
    assert cached.prefix_cache.hit_tokens > hits


def test_bad_requests_are_clear(engine):
    with pytest.raises(EngineError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(EngineError, match="empty token-id prompt"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(EngineError, match="unknown engine 'tgi'"):
        make_engine("tgi")


def test_top_k_and_top_p_filters_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=2, top_p=1.0))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=0, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=0, top_p=0.81))
    assert kept.tolist() == [[True, True, True, False]]
    scaled = filter_logits(logits, 0.5, top_k=0, top_p=1.0)
    torch.testing.assert_close(scaled, logits * 2)
    assert sample_tokens(logits, 0.0, 0, 1.0, None).tolist() == [0]
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(logits, 1.0, 2, 1.0, generator) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}


def test_top_p_from_the_most_likely_candidates_equals_sorting_the_whole_vocabulary():
    from rftt.engine.sampling import NUCLEUS_CANDIDATES

    def sorted_nucleus(logits, top_p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probabilities = torch.softmax(sorted_logits, dim=-1)
        sorted_logits = sorted_logits.masked_fill(probabilities.cumsum(-1) - probabilities >= top_p, float("-inf"))
        return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)

    generator = torch.Generator().manual_seed(0)
    peaked = torch.randn((4, 8 * NUCLEUS_CANDIDATES), generator=generator) * 4  # nucleus among the candidates
    flat = torch.randn((2, 8 * NUCLEUS_CANDIDATES), generator=generator) * 0.1  # nucleus beyond them
    for logits in (peaked, flat, torch.cat([peaked[:1], flat[:1]])):
        for top_p in (0.5, 0.9, 0.95):
            torch.testing.assert_close(filter_logits(logits, 1.0, 0, top_p), sorted_nucleus(logits, top_p))
    assert int(torch.isfinite(filter_logits(flat, 1.0, 0, 0.9)).sum(-1).min()) > NUCLEUS_CANDIDATES


def test_draws_follow_the_distribution_and_never_pick_a_token_of_zero_mass():
    probabilities = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    draws = sample_tokens(probabilities.log().repeat(20_000, 1), 1.0, 0, 1.0, generator).view(20_000, 2)
    first = torch.bincount(draws[:, 0], minlength=4) / len(draws)
    torch.testing.assert_close(first, probabilities[0], atol=0.015, rtol=0)  # about 4 standard errors
    assert first[1] == 0 and draws[:, 1].eq(3).all()


def test_vllm_backend_imports_without_vllm():
    import importlib.util

    from rftt.engine import vllm_backend

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(EngineError, match=r"pip install 'rftt\[vllm\]'"):
            vllm_backend.VLLMEngine("some-model")


def test_shared_prefix_groups():
    from rftt.engine.batch import shared_prefix_groups

    prompts = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 8], [1, 2, 3, 4, 6, 6]]
    assert shared_prefix_groups(prompts, minimum=3) == [(3, [0, 3, 1]), (1, [2])]
    assert shared_prefix_groups(prompts, minimum=4) == [(4, [0, 3]), (3, [1]), (1, [2])]


def test_shared_prefill_gives_the_same_completions_as_separate_prefill(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    stem = "clarify the question and what is asked then analyze the problem then take the next step"
    prompts = [f"{stem} {tail}" for tail in ("12 +", "the answer is", "verify the")] + ["12 +", "x"]
    shared = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, min_shared_prefix=4)
    separate = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, min_shared_prefix=10_000)
    for params in (SamplingParams(max_new_tokens=8), SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)):
        assert_same_completions(shared.generate(prompts, params), separate.generate(prompts, params))
    for prompt, [completion] in zip(prompts, shared.generate(prompts, SamplingParams(max_new_tokens=8))):
        assert completion.token_ids == manual_greedy(tiny_model, tiny_tokenizer, prompt, 8, {tiny_tokenizer.eos_token_id})


def test_the_prefix_cache_reuses_earlier_prompts_and_gives_the_same_completions(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    stem = "clarify the question and what is asked then analyze the problem then take the next step " * 3
    first = [f"{stem} 12 +", f"{stem} the answer is"]
    later = [f"{stem} verify the", f"{stem} 12 + the answer is", "x"]
    cached = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, prefix_cache_mib=64)
    uncached = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, prefix_cache_mib=0)
    params = [SamplingParams(max_new_tokens=8), SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)]
    for prompts in (first, later):
        for setting in params:
            assert_same_completions(cached.generate(prompts, setting), uncached.generate(prompts, setting))
    stem_tokens = len(tiny_tokenizer.encode(stem, add_special_tokens=False))
    assert cached.prefix_cache.hit_tokens >= 3 * (stem_tokens // 16 * 16)
    for prompt, [completion] in zip(later, cached.generate(later, params[0])):
        assert completion.token_ids == manual_greedy(tiny_model, tiny_tokenizer, prompt, 8, {tiny_tokenizer.eos_token_id})


def test_prompts_sharing_a_short_stem_still_start_from_their_own_cached_blocks(tiny_model, tiny_tokenizer):
    """Found in a token-guided tree search: prompts sharing only a system prompt were grouped by that stem and
    their cached remainders recomputed."""
    tiny_model.eval()
    stem = "clarify the question and what is asked " * 3
    rests = ["then analyze the problem then take the next step " * 3, "verify the previous steps, refine them " * 4]
    engine = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, prefix_cache_mib=64)
    engine.generate([stem + rest for rest in rests], SamplingParams(max_new_tokens=1))
    hits = engine.prefix_cache.hit_tokens
    engine.generate([stem + rest + "12 +" for rest in rests], SamplingParams(max_new_tokens=1))
    lengths = [len(tiny_tokenizer.encode(stem + rest, add_special_tokens=False)) for rest in rests]
    assert engine.prefix_cache.hit_tokens - hits >= sum(length // 16 * 16 for length in lengths)


def test_the_prefix_cache_is_emptied_when_the_weights_change(tiny_tokenizer):
    from conftest import build_tiny_model

    model = build_tiny_model(len(tiny_tokenizer), seed=5).eval()
    prompt = "clarify the question and what is asked then analyze the problem then take the next step " * 3
    engine = make_engine("hf", model=model, tokenizer=tiny_tokenizer, prefix_cache_mib=64)
    engine.generate([prompt], SamplingParams(max_new_tokens=4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    hits = engine.prefix_cache.hit_tokens
    [[completion]] = engine.generate([prompt], SamplingParams(max_new_tokens=6))
    assert engine.prefix_cache.hit_tokens == hits
    assert completion.token_ids == manual_greedy(model, tiny_tokenizer, prompt, 6, {tiny_tokenizer.eos_token_id})


def test_the_prefix_cache_keeps_within_its_budget():
    from rftt.engine.prefix_cache import PrefixCache

    cache = PrefixCache(max_bytes=3 * 2 * 4 * 4 * 2, block_size=2)  # room for three blocks of 1 layer, 2 heads x 2 tokens x 2 dims
    keys = [torch.arange(2 * 8 * 2, dtype=torch.float32).reshape(2, 8, 2)]
    cache.store([1, 2, 3, 4, 5, 6, 7, 8], keys, keys)
    assert cache.bytes <= cache.max_bytes and len(cache.lookup([1, 2, 3, 4, 5, 6, 7, 8, 9])) == 3
    cache.store([1, 2, 3, 4, 5], keys, keys)
    found = cache.lookup([1, 2, 3, 4, 9])
    assert len(found) == 2
    gathered, _ = cache.gather(found, 1)
    torch.testing.assert_close(gathered[0], keys[0][:, :4])


def test_the_prefix_cache_evicts_a_chains_descendants_before_its_root():
    from rftt.engine.prefix_cache import PrefixCache

    keys = [torch.zeros(1, 6, 1)]
    cache = PrefixCache(max_bytes=10**9, block_size=2)
    cache.store([1, 2, 3, 4, 5, 6], keys, keys)
    block_bytes = cache.bytes // 3
    cache.max_bytes = 2 * block_bytes
    cache.store([7, 8], keys, keys)  # over budget by one block: the chain's leaf goes, its root stays
    assert len(cache.lookup([1, 2, 3, 4, 5, 6, 0])) == 1 and len(cache.lookup([7, 8, 0])) == 1


def test_the_prefix_cache_is_refused_for_sliding_window_models(tiny_tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=8)
    model = MistralForCausalLM(config).eval()
    with pytest.raises(EngineError, match="sliding-window"):
        make_engine("hf", model=model, tokenizer=tiny_tokenizer, prefix_cache_mib=64)
    make_engine("hf", model=model, tokenizer=tiny_tokenizer)


def test_continuous_batching_refills_finished_rows_and_matches_plain_decoding(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    prompts = PROMPTS + ["the", "verify the previous steps, refine the answer is 12 + 12 clarify the question", "12"]
    small = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, max_batch_rows=4)
    eos = tiny_tokenizer.eos_token_id
    shortest = min(prompts, key=lambda prompt: len(tiny_tokenizer.encode(prompt, add_special_tokens=False)))
    for max_new_tokens in (3, 9):  # the shortest prompt's row stops first and a waiting prompt takes its place
        stop = tiny_tokenizer.decode(manual_greedy(tiny_model, tiny_tokenizer, shortest, 1, {eos}))
        results = small.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, stop=(stop,)))
        unbatched = [make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer).generate([prompt], SamplingParams(
            max_new_tokens=max_new_tokens, stop=(stop,)))[0] for prompt in prompts]
        assert_same_completions(results, unbatched)
        for prompt, [completion] in zip(prompts, results):
            ids = tiny_tokenizer.encode(prompt, add_special_tokens=False)
            torch.testing.assert_close(torch.tensor(completion.logprobs),
                                       forward_logprobs(tiny_model, ids, completion.token_ids), atol=1e-4, rtol=1e-4)
    assert small.refills > 0
    sampled = small.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=1))
    assert [len(samples) for samples in sampled] == [3] * len(prompts)
    assert sampled == small.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=1))


def test_stream_admits_requests_fed_while_others_decode(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    engine = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer, max_batch_rows=4)
    params = SamplingParams(max_new_tokens=10, ignore_eos=True)
    first = [StreamRequest("12 +", 1, 2), StreamRequest("the answer is", 2), StreamRequest("verify the", 1, 7)]
    later = [StreamRequest("clarify the question", 1, 4)]
    feeds: list[int] = []

    def feed():
        feeds.append(len(results))
        return first if len(feeds) == 1 else later if len(feeds) == 2 else []

    results: list[tuple[int, int, object]] = []
    for result in engine.stream(feed, params):
        results.append(result)
    # The 2-token request ends first; the next request is fed right after it and joins the running batch.
    assert results[0][:2] == (0, 0) and feeds[:2] == [0, 1] and engine.refills >= 1
    assert sorted(result[:2] for result in results) == [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0)]
    alone = make_engine("hf", model=tiny_model, tokenizer=tiny_tokenizer)
    for number, sample, completion in results:
        request = (first + later)[number]
        limit = request.max_new_tokens or params.max_new_tokens
        [expected] = alone.generate([request.prompt], SamplingParams(max_new_tokens=limit, ignore_eos=True))
        assert_same_completions([[completion]], [expected])


def test_a_stream_request_longer_than_the_stream_is_refused(engine):
    requests = [[StreamRequest("12 +", 1, 11)]]
    with pytest.raises(EngineError, match="max_new_tokens=11 is outside 1..10"):
        list(engine.stream(lambda: requests.pop() if requests else [], SamplingParams(max_new_tokens=10)))


def test_the_growing_cache_layer_holds_what_concatenation_would():
    from transformers.cache_utils import DynamicLayer

    from rftt.engine.batch import GROWTH_STEPS, GrowingLayer

    generator = torch.Generator().manual_seed(0)
    growing, plain = GrowingLayer(), DynamicLayer()
    for step in range(GROWTH_STEPS * 2 + 3):
        keys, values = (torch.randn(3, 2, 5 if step == 0 else 1, 4, generator=generator) for _ in range(2))
        if step == GROWTH_STEPS // 2:  # a row leaves the batch: the layer's tensors are replaced from outside
            for layer in (growing, plain):
                layer.batch_select_indices(torch.tensor([0, 2]))
        if step >= GROWTH_STEPS // 2:
            keys, values = keys[:2], values[:2]
        got, expected = growing.update(keys, values), plain.update(keys, values)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert growing.keys.shape == plain.keys.shape == (2, 2, GROWTH_STEPS * 2 + 7, 4)


@pytest.mark.parametrize("top", [0, 2])
def test_outputs_record_live_rows_only_and_a_finished_row_at_its_limit_is_left_as_it_is(top):
    from rftt.engine.batch import Outputs

    outputs = Outputs(width=3, pad_id=0, device=torch.device("cpu"), top_logprobs=top)
    outputs.reserve(2)
    before = [buffer.clone() for buffer in (outputs.tokens, outputs.logprobs, outputs.top_ids, outputs.top_values)]
    logits = torch.randn(2, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([4, 5])
    outputs.record(torch.tensor([0, 1]), torch.tensor([1, 3]), tokens, logits, live=torch.tensor([True, False]))
    expected = torch.log_softmax(logits, dim=-1)
    assert outputs.tokens[0].tolist() == [0, 4, 0]
    assert outputs.logprobs[0, 1] == pytest.approx(float(expected[0, 4]), abs=1e-6)
    if top:
        assert outputs.top_ids[0, 1].tolist() == expected[0].topk(2).indices.tolist()
    for buffer, saved in zip((outputs.tokens, outputs.logprobs, outputs.top_ids, outputs.top_values), before):
        assert torch.equal(buffer[1], saved[1])  # the finished row (step 3 = its limit) is unchanged
