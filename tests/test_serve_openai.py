"""`rftt serve` driven by the official `openai` client, as OpenAI-compatible tooling drives it: streaming,
the common request options, bad requests, concurrency, the API key, and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
import torch

from rftt.engine import SamplingParams
from rftt.engine.sampling import apply_penalties

from conftest import TINY_CHAT_TEMPLATE, running_server, save_tiny_checkpoint

API_KEY = "openai-test-key"
PROMPTS = ["the answer is 4 and", "so we add 3 and", "the sum of 12 and"]
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 3 and 4?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("chat-checkpoint"), seed=3, chat_template=TINY_CHAT_TEMPLATE)
    with running_server("--model", checkpoint, "--api-key", API_KEY, "--batch-window-ms", "50") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


def batching(server: str) -> dict:
    return httpx.get(f"{server}/health").json()["batching"]


def streamed_completion_texts(client, **request) -> tuple[dict[int, str], dict[int, str], list]:
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    chunks = list(client.completions.create(stream=True, **request))
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    return texts, finish, chunks


def streamed_chat_texts(client, **request) -> tuple[dict[int, str], dict[int, str]]:
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    return texts, finish


def test_streamed_text_equals_the_non_streamed_text_of_the_same_greedy_request(client):
    request = {"model": "tiny", "prompt": PROMPTS, "max_tokens": 24, "temperature": 0}
    whole = client.completions.create(**request)
    texts, finish, _ = streamed_completion_texts(client, **request)
    assert texts == {choice.index: choice.text for choice in whole.choices}
    assert finish == {choice.index: choice.finish_reason for choice in whole.choices}
    assert any(text for text in texts.values())
    chat = {"model": "tiny", "messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    reply = client.chat.completions.create(**chat)
    chat_texts, chat_finish = streamed_chat_texts(client, **chat)
    assert chat_texts == {0: reply.choices[0].message.content}
    assert chat_finish == {0: reply.choices[0].finish_reason}
    assert reply.choices[0].message.role == "assistant"


def test_n_gives_that_many_choices_streamed_or_not(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, n=3, max_tokens=6, temperature=1.0)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    texts, finish = streamed_chat_texts(client, model="tiny", messages=MESSAGES, n=3, max_tokens=6, temperature=1.0)
    assert sorted(texts) == sorted(finish) == [0, 1, 2]
    whole = client.completions.create(model="tiny", prompt=PROMPTS[:2], n=3, max_tokens=4)
    assert sorted(choice.index for choice in whole.choices) == list(range(6))


def test_stop_strings_are_honoured_and_never_streamed(client):
    request = {"model": "tiny", "prompt": PROMPTS, "max_tokens": 40, "temperature": 0, "stop": [" and", "4"]}
    whole = client.completions.create(**request)
    texts, finish, _ = streamed_completion_texts(client, **request)
    assert texts == {choice.index: choice.text for choice in whole.choices}
    for choice in whole.choices:
        assert " and" not in choice.text and "4" not in choice.text
    assert set(finish.values()) <= {"stop", "length"}
    single = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=40, temperature=0, stop=" and")
    assert " and" not in single.choices[0].text


def test_a_seed_repeats_a_sampled_stream(client):
    request = {"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 12, "temperature": 1.0, "seed": 7}
    assert streamed_completion_texts(client, **request)[0] == streamed_completion_texts(client, **request)[0]


def test_usage_comes_last_when_asked(client):
    texts, _, chunks = streamed_completion_texts(client, model="tiny", prompt=PROMPTS[:2], max_tokens=5, temperature=0,
                                                 stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens <= 10 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_log_probabilities_for_chat_and_text(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and all(len(token.top_logprobs) == 3 for token in content)
    for token in content:
        alternatives = [alternative.logprob for alternative in token.top_logprobs]
        assert alternatives == sorted(alternatives, reverse=True)
        assert token.logprob == pytest.approx(alternatives[0], abs=1e-4)  # greedy: the chosen token is the best one
    text = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=5, temperature=0, logprobs=2)
    logprobs = text.choices[0].logprobs
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    assert all(1 <= len(step) <= 2 for step in logprobs.top_logprobs)


def test_penalties_are_applied(client):
    request = {"model": "tiny", "prompt": PROMPTS, "max_tokens": 30, "temperature": 0}
    plain = [choice.text for choice in client.completions.create(**request).choices]
    penalised = [choice.text for choice in client.completions.create(presence_penalty=2.0, frequency_penalty=2.0,
                                                                      **request).choices]
    assert plain != penalised


def test_a_penalty_lowers_each_generated_token_by_presence_once_and_frequency_per_occurrence():
    logits = torch.zeros(2, 5)
    generated = torch.tensor([[1, 1, 3, 0], [2, 4, 4, 4]])
    penalised = apply_penalties(logits, generated, torch.tensor([3, 2]), presence=0.5, frequency=0.25)
    torch.testing.assert_close(penalised, torch.tensor([[0.0, -1.0, 0.0, -0.75, 0.0], [0.0, 0.0, -0.75, 0.0, -0.75]]))


@pytest.mark.parametrize("request_fields, field", [
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "hi", "presence_penalty": 3.0}, "presence_penalty"),
    ({"prompt": "hi", "stream": True, "logprobs": 1}, "logprobs"),
    ({"prompt": "hi", "stream": True, "logprobs": 0}, "logprobs"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": "hi", "logprobs": 30}, "logprobs"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_completion_requests_are_refused_naming_the_field(client, request_fields, field):
    with pytest.raises(openai.BadRequestError, match=field):
        client.completions.create(model="tiny", **request_fields)


@pytest.mark.parametrize("request_fields, field", [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": []}, "messages"),
    ({"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": MESSAGES, "stream": True, "logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "content"),
    ({"messages": MESSAGES, "max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens"),
])
def test_bad_chat_requests_are_refused_naming_the_field(client, request_fields, field):
    with pytest.raises(openai.BadRequestError, match=field):
        client.chat.completions.create(model="tiny", **request_fields)


def test_developer_messages_and_text_parts_are_read_as_chat_templates_expect(client):
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=0)
    parts = [{"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
             {"role": "user", "content": "what is 3 and 4?", "name": "ada"}]
    reply = client.chat.completions.create(model="tiny", messages=parts, max_tokens=6, temperature=0)
    assert reply.choices[0].message.content == plain.choices[0].message.content


def test_max_completion_tokens_is_the_newer_name_of_max_tokens(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=3, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"


def test_sixteen_concurrent_streamed_requests_all_complete_batched(server):
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)

        async def one(number: int) -> str:
            finish = None
            stream = await client.completions.create(model="tiny", prompt=f"the answer is {number} and", max_tokens=12,
                                                     temperature=0, stream=True)
            async for chunk in stream:
                finish = next((choice.finish_reason for choice in chunk.choices if choice.finish_reason), finish)
            return finish

        return await asyncio.gather(*(one(number) for number in range(16)))

    calls_before = batching(server)["engine_calls"]
    assert all(finish in ("stop", "length") for finish in asyncio.run(run()))
    assert batching(server)["engine_calls"] - calls_before < 16


def test_the_api_key_is_enforced(server):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="tiny", prompt="hi", max_tokens=2)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong.models.list()


def test_a_client_that_leaves_mid_stream_stops_its_generation(server, client):
    stopped_before = batching(server)["stopped_requests"]
    with httpx.stream("POST", f"{server}/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"prompt": PROMPTS[0], "max_tokens": 200, "temperature": 0, "ignore_eos": True,
                            "stream": True}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk read, then the connection is closed
    deadline = time.monotonic() + 20
    while batching(server)["stopped_requests"] == stopped_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batching(server)["stopped_requests"] == stopped_before + 1
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).choices[0].finish_reason


def test_sampling_params_reject_penalties_and_top_logprobs_out_of_range():
    for fields in ({"presence_penalty": 2.5}, {"frequency_penalty": -3.0}, {"top_logprobs": 21}):
        with pytest.raises(Exception, match=next(iter(fields))):
            SamplingParams(**fields)
