"""`rftt serve` started for real on a loopback port, used through the `openai` backend."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
import torch

from rftt.engine import EngineError, SamplingParams, make_engine

from conftest import build_tiny_tokenizer, free_port, running_server, save_tiny_checkpoint

API_KEY = "test-key"
PROMPTS = [f"the answer is {number} and" for number in range(16)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), seed=0)


@pytest.fixture(scope="module")
def server(checkpoint):
    # compared token for token with an engine in this process, on the CPU
    with running_server("--model", checkpoint, "--api-key", API_KEY, "--batch-window-ms", "50", "--device", "cpu") as url:
        yield url


@pytest.fixture(scope="module")
def local_engine(checkpoint):
    from rftt.models import load_model

    model, tokenizer = load_model(str(checkpoint))
    model.eval()
    return make_engine("hf", model=model, tokenizer=tokenizer)


def client(url: str, **options) -> object:
    return make_engine("openai", base_url=url, api_key=API_KEY, **options)


def test_sixteen_concurrent_requests_match_in_process_generation_and_are_batched(server, local_engine):
    remote = client(server, prompts_per_request=1, max_concurrency=16)
    calls_before = httpx.get(f"{server}/health").json()["batching"]["engine_calls"]
    params = SamplingParams(max_new_tokens=10)
    got = remote.generate(PROMPTS, params)
    expected = local_engine.generate(PROMPTS, params)
    for [remote_completion], [local_completion] in zip(got, expected):
        assert remote_completion.token_ids == local_completion.token_ids
        assert remote_completion.text == local_completion.text
        assert remote_completion.finish_reason == local_completion.finish_reason
        torch.testing.assert_close(torch.tensor(remote_completion.logprobs), torch.tensor(local_completion.logprobs),
                                   atol=1e-3, rtol=1e-3)
    batching = httpx.get(f"{server}/health").json()["batching"]
    assert batching["engine_calls"] - calls_before < len(PROMPTS)
    assert batching["largest_call_prompts"] > 1


def test_sampling_with_n_stops_and_seeds_round_trips(server, local_engine):
    remote = client(server)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=11, stop=("then",))
    got = remote.generate(PROMPTS[:2], params)
    assert [len(samples) for samples in got] == [3, 3]
    assert remote.generate(PROMPTS[:2], params) == got
    for samples in got:
        for completion in samples:
            assert "then" not in completion.text
            assert completion.finish_reason in ("stop", "length")


def test_next_token_logprobs_through_the_server(server, local_engine):
    remote = client(server)
    got = remote.next_token_logprobs(PROMPTS[:3], [5, 9])
    torch.testing.assert_close(torch.tensor(got), torch.tensor(local_engine.next_token_logprobs(PROMPTS[:3], [5, 9])),
                               atol=1e-4, rtol=1e-4)


def test_chat_completions_and_models(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    models = httpx.get(f"{server}/v1/models", headers=headers).json()
    assert models["data"][0]["object"] == "model"
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.chat_template is None
    answer = httpx.post(f"{server}/v1/chat/completions", headers=headers,
                        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert answer.status_code == 400 and "chat template" in answer.text


def test_wrong_key_unknown_fields_and_bad_values_are_refused(server):
    with pytest.raises(EngineError, match="401"):
        make_engine("openai", base_url=server, api_key="wrong").generate(["hi"], SamplingParams(max_new_tokens=2))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    answer = httpx.post(f"{server}/v1/completions", headers=headers, json={"prompt": "hi", "temprature": 0.5})
    assert answer.status_code == 400 and "temprature" in answer.json()["error"]["message"]
    answer = httpx.post(f"{server}/v1/completions", headers=headers, json={"prompt": "hi", "stream_options": {}})
    assert answer.status_code == 400 and "stream_options" in answer.json()["error"]["message"]


def test_an_unreachable_server_fails_after_bounded_retries():
    remote = make_engine("openai", base_url=f"http://127.0.0.1:{free_port()}", max_retries=2, backoff_seconds=0.05,
                         timeout=2)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"unreachable .* after 3 attempts"):
        remote.generate(["hi"], SamplingParams(max_new_tokens=2))
    assert time.monotonic() - started < 5


class _JunkHandler(BaseHTTPRequestHandler):
    """A server that answers every POST with well-formed JSON of the wrong shape, or 503 first."""

    calls = 0

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = (503, b"busy") if type(self).calls == 1 else (200, json.dumps({"unexpected": True}).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments) -> None:
        pass


def test_a_bad_answer_is_named_after_retrying_a_busy_server():
    junk = HTTPServer(("127.0.0.1", 0), _JunkHandler)
    thread = threading.Thread(target=junk.serve_forever, daemon=True)
    thread.start()
    try:
        remote = make_engine("openai", base_url=f"http://127.0.0.1:{junk.server_port}", backoff_seconds=0.01)
        with pytest.raises(EngineError, match="answered badly"):
            remote.generate(["hi"], SamplingParams(max_new_tokens=2))
        assert _JunkHandler.calls == 2
    finally:
        junk.shutdown()
