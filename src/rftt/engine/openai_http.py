"""The `openai` backend: any server speaking the OpenAI completions API (vLLM, SGLang, llama.cpp, `rftt serve`).

Requests run concurrently (bounded), time out, and are retried with exponential back-off
on connection errors, 429 and 5xx answers; other answers are errors that quote the
server. Token ids come back when the server supports `return_token_ids` (vLLM and
`rftt serve` do); otherwise they are re-encoded with a tokenizer if one was given.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Sequence

import httpx
from pydantic import ValidationError

from rftt.engine.base import Engine
from rftt.engine.protocol import CompletionChoice, CompletionResponse, NextTokenResponse
from rftt.engine.types import Completion, EngineError, Prompt, SamplingParams

DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_PROMPTS_PER_REQUEST = 8
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class OpenAIEngine(Engine):
    """Generation through an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        tokenizer: Any = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        prompts_per_request: int = DEFAULT_PROMPTS_PER_REQUEST,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_concurrency = max_concurrency
        self.prompts_per_request = prompts_per_request
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        groups = [list(prompts[start : start + self.prompts_per_request])
                  for start in range(0, len(prompts), self.prompts_per_request)]
        bodies = [self._completion_body(group, params) for group in groups]
        answers = _run(self._post_all("/v1/completions", bodies))
        results: list[list[Completion]] = []
        for group, answer in zip(groups, answers):
            response = self._parse(CompletionResponse, answer)
            choices = sorted(response.choices, key=lambda choice: choice.index)
            if len(choices) != len(group) * params.n:
                raise EngineError(f"{self.base_url} answered {len(choices)} choices for {len(group)} prompts x n={params.n}")
            for position in range(len(group)):
                samples = choices[position * params.n : (position + 1) * params.n]
                results.append([self._completion(choice) for choice in samples])
        return results

    def next_token_logprobs(self, prefixes: Sequence[Prompt], candidate_token_ids: Sequence[int]) -> list[list[float]]:
        body = {"prefixes": [_jsonable(prefix) for prefix in prefixes], "candidate_token_ids": list(candidate_token_ids)}
        if self.model:
            body["model"] = self.model
        try:
            [answer] = _run(self._post_all("/v1/next_token_logprobs", [body]))
        except EngineError as error:
            if "404" in str(error):
                raise EngineError(
                    f"{self.base_url} has no /v1/next_token_logprobs: ranking functional tokens needs `rftt serve` "
                    "or the hf/vllm backends"
                ) from None
            raise
        return self._parse(NextTokenResponse, answer).logprobs

    def _completion_body(self, prompts: list[Prompt], params: SamplingParams) -> dict:
        if params.top_logprobs:
            raise EngineError("top_logprobs: the openai backend returns only each token's own log-probability "
                              "(use the hf or vllm backend)")
        body: dict[str, Any] = {
            "prompt": [_jsonable(prompt) for prompt in prompts],
            "n": params.n, "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens,
            "logprobs": 0, "return_token_ids": True,
        }
        optional = {"top_k": params.top_k or None, "stop": list(params.stop) or None,
                    "stop_token_ids": list(params.stop_token_ids) or None, "seed": params.seed,
                    "ignore_eos": params.ignore_eos or None, "model": self.model,
                    "presence_penalty": params.presence_penalty or None,
                    "frequency_penalty": params.frequency_penalty or None}
        body.update({key: value for key, value in optional.items() if value is not None})
        return body

    def _completion(self, choice: CompletionChoice) -> Completion:
        token_ids = choice.token_ids
        if token_ids is None:
            token_ids = self.tokenizer.encode(choice.text, add_special_tokens=False) if self.tokenizer else []
        logprobs = choice.logprobs.token_logprobs if choice.logprobs else []
        return Completion(choice.text, list(token_ids), list(logprobs), choice.finish_reason or "stop", choice.stop_reason)

    def _parse(self, model: type, answer: dict) -> Any:
        try:
            return model.model_validate(answer)
        except ValidationError as error:
            raise EngineError(f"{self.base_url} answered badly: {error.errors()[0]['msg']} in {str(answer)[:300]}") from None

    async def _post_all(self, path: str, bodies: list[dict]) -> list[dict]:
        limit = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout) as client:

            async def post(body: dict) -> dict:
                async with limit:
                    return await self._post_with_retries(client, path, body)

            return list(await asyncio.gather(*(post(body) for body in bodies)))

    async def _post_with_retries(self, client: httpx.AsyncClient, path: str, body: dict) -> dict:
        failure = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = await client.post(path, json=body)
            except httpx.TransportError as error:
                failure = f"unreachable ({type(error).__name__}: {error})"
                continue
            if response.status_code in _RETRY_STATUSES:
                failure = f"answered {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code != 200:
                raise EngineError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:500]}")
            try:
                return response.json()
            except ValueError:
                raise EngineError(f"{self.base_url}{path} answered with something that is not JSON: {response.text[:300]}") from None
        raise EngineError(f"{self.base_url}{path} {failure} after {self.max_retries + 1} attempts")


def _jsonable(prompt: Prompt) -> str | list[int]:
    return prompt if isinstance(prompt, str) else [int(token_id) for token_id in prompt]


def _run(coroutine: Any) -> Any:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
