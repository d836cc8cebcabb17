"""Streaming inside the server, in process with a real tiny model: the text released piece by piece, and the
request batcher (requests that leave, length limits of their own, answers as soon as they are done)."""

from __future__ import annotations

import asyncio

import pytest

from rftt.engine.hf import HFEngine
from rftt.engine.types import Completion, SamplingParams
from rftt.serve.batching import RequestBatcher
from rftt.serve.streaming import TextDeltas

from conftest import build_tiny_model, build_tiny_tokenizer

TEXT = "the answer is 42 , and it 's café 日本 then verify the steps."


@pytest.fixture(scope="module")
def engine():
    tokenizer = build_tiny_tokenizer()
    return HFEngine(build_tiny_model(len(tokenizer), seed=4).eval(), tokenizer)


def streamed(engine: HFEngine, token_ids: list[int], params: SamplingParams) -> tuple[str, str]:
    """The text released token by token plus the rest sent at the end, and the non-streamed text."""
    deltas = TextDeltas(engine, params)
    pieces = [deltas.add([token_id]) for token_id in token_ids]
    whole = engine.visible_text(token_ids, params)
    for stop in params.stop:
        whole = whole.split(stop)[0] if stop in whole else whole
    return "".join(pieces) + deltas.rest(Completion(whole, token_ids, [], "stop")), whole


@pytest.mark.parametrize("clean_up_spaces", [False, True])
@pytest.mark.parametrize("stop", [(), ("verify",), (" 's c",), ("日本",)])
def test_streamed_pieces_add_up_to_the_text_whatever_the_tokenizer_cleans_and_where_stops_fall(engine, stop,
                                                                                                 clean_up_spaces):
    tokenizer = engine.tokenizer
    tokenizer.clean_up_tokenization_spaces = clean_up_spaces
    tokenizer.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = clean_up_spaces
    try:
        token_ids = tokenizer.encode(TEXT, add_special_tokens=False) + [tokenizer.eos_token_id]
        text, whole = streamed(engine, token_ids, SamplingParams(stop=stop))
    finally:
        tokenizer.clean_up_tokenization_spaces = False
        tokenizer.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = False
    assert text == whole
    if clean_up_spaces:
        assert "42," in whole  # the tokenizer did clean up, so the check above covered it


def test_a_stop_string_is_never_sent_even_in_part(engine):
    token_ids = engine.tokenizer.encode(TEXT, add_special_tokens=False)
    deltas = TextDeltas(engine, SamplingParams(stop=("café 日",)))
    sent = "".join(deltas.add([token_id]) for token_id in token_ids)
    assert "caf" not in sent and sent == "the answer is 42 , and it 's"


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_request_whose_client_leaves_stops_at_the_next_step_and_the_rest_are_answered(engine):
    async def scenario():
        batcher = RequestBatcher(engine, window_seconds=0.05)
        batcher.start()
        long = SamplingParams(max_new_tokens=200, ignore_eos=True)
        leaving = batcher.submit(["the answer is"], long, streamed=True)
        staying = batcher.submit(["so we add"], long)
        told_before = len(await leaving.tokens.get())
        leaving.leave()
        told_after = 0
        while (step := await leaving.tokens.get()) is not None:
            told_after += len(step)
        [[completion]] = await staying.answer
        await batcher.stop()
        return told_before, told_after, leaving.answer.cancelled(), completion, batcher.statistics

    told_before, told_after, cancelled, completion, statistics = run(scenario())
    assert told_before == 1 and told_after <= 2  # the engine stops its row at the next step
    assert cancelled and len(completion.token_ids) == 200
    assert statistics.stopped_requests == 1 and statistics.engine_calls == 1


def test_requests_with_their_own_length_limits_share_a_call_and_the_short_one_is_answered_first(engine):
    async def scenario():
        batcher = RequestBatcher(engine, window_seconds=0.05)
        batcher.start()
        short = batcher.submit(["the answer is"], SamplingParams(max_new_tokens=3, ignore_eos=True), streamed=True)
        long = batcher.submit(["so we add"], SamplingParams(max_new_tokens=150, ignore_eos=True))
        [[short_completion]] = await short.answer
        long_done_when_short_was = long.answer.done()
        [[long_completion]] = await long.answer
        await batcher.stop()
        return short_completion, long_completion, long_done_when_short_was, batcher.statistics

    short_completion, long_completion, long_done_when_short_was, statistics = run(scenario())
    assert len(short_completion.token_ids) == 3 and len(long_completion.token_ids) == 150
    assert not long_done_when_short_was
    assert statistics.engine_calls == 1 and statistics.largest_call_prompts == 2
