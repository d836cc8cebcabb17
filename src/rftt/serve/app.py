"""`rftt serve`: any model `rftt.models` can load, behind the OpenAI-compatible completions API.

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/completions`,
`POST /v1/chat/completions`, and rftt's `POST /v1/next_token_logprobs`; or, with `--prm`,
`POST /v1/process_rewards` (per-step scores of a process reward model). Concurrent
requests are merged into batched engine calls (see `rftt.serve.batching`). With an API
key, every request must send `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from rftt.engine.hf import HFEngine
from rftt.engine.types import Completion, EngineError
from rftt.search.process_rewards import PROCESS_REWARDS_PATH, HFProcessRewardModel, ProcessRewardConfig
from rftt.serve.batching import DEFAULT_WINDOW_SECONDS, RequestBatcher
from rftt.serve.protocol import (
    ChatChoice,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Logprobs,
    NextTokenRequest,
    NextTokenResponse,
    ProcessRewardRequest,
    ProcessRewardResponse,
    Usage,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def create_app(engine: HFEngine | None, model_name: str, *, api_key: str | None = None,
               batch_window_seconds: float = DEFAULT_WINDOW_SECONDS,
               process_rewards: HFProcessRewardModel | None = None) -> FastAPI:
    """The server around an in-process engine (generation routes) or a process reward model (its route)."""
    batcher = RequestBatcher(engine, window_seconds=batch_window_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="rftt serve", lifespan=lifespan)

    def authorised(authorization: str | None = Header(default=None)) -> None:
        if api_key is not None and not secrets.compare_digest(authorization or "", f"Bearer {api_key}"):
            raise HTTPException(status_code=401, detail="missing or wrong API key (send 'Authorization: Bearer <key>')")

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, error: EngineError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": {"message": str(error), "type": "invalid_request_error"}})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "batching": asdict(batcher.statistics)}

    if process_rewards is not None:

        @app.post(PROCESS_REWARDS_PATH, dependencies=[Depends(authorised)])
        async def score_process(request: ProcessRewardRequest) -> ProcessRewardResponse:
            items = [(item.question, item.steps) for item in request.items]
            return ProcessRewardResponse(scores=await batcher.run_exclusive(lambda: process_rewards.score_steps(items)))

    if engine is not None:
        _add_generation_routes(app, engine, batcher, model_name, authorised)
    app.state.batcher = batcher
    return app


def _add_generation_routes(app: FastAPI, engine: HFEngine, batcher: RequestBatcher, model_name: str,
                           authorised) -> None:
    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "rftt"}]}

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    async def completions(request: CompletionRequest) -> CompletionResponse:
        prompts = request.prompts()
        results = await batcher.generate(prompts, request.sampling_params())
        choices = [
            _choice(engine, completion, prompt_index * request.n + sample, request)
            for prompt_index, samples in enumerate(results)
            for sample, completion in enumerate(samples)
        ]
        return CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                                  choices=choices, usage=_usage(results))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat_completions(request: ChatRequest) -> ChatResponse:
        if engine.tokenizer.chat_template is None:
            raise EngineError(f"{model_name} has no chat template: use /v1/completions with a formatted prompt")
        messages = [message.model_dump() for message in request.messages]
        prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        [samples] = await batcher.generate([prompt], request.sampling_params())
        choices = [
            ChatChoice(index=index, message=ChatMessage(role="assistant", content=completion.text),
                       finish_reason=completion.finish_reason)
            for index, completion in enumerate(samples)
        ]
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                            choices=choices, usage=_usage([samples]))

    @app.post("/v1/next_token_logprobs", dependencies=[Depends(authorised)])
    async def next_token_logprobs(request: NextTokenRequest) -> NextTokenResponse:
        logprobs = await batcher.run_exclusive(
            lambda: engine.next_token_logprobs(request.prefixes, request.candidate_token_ids))
        return NextTokenResponse(logprobs=logprobs)


def _choice(engine: HFEngine, completion: Completion, index: int, request: CompletionRequest) -> CompletionChoice:
    logprobs = None
    if request.logprobs is not None:
        tokens = [engine.tokenizer.decode([token_id], skip_special_tokens=False) for token_id in completion.token_ids]
        offsets = [sum(len(token) for token in tokens[:position]) for position in range(len(tokens))]
        logprobs = Logprobs(tokens=tokens, token_logprobs=completion.logprobs, text_offset=offsets)
    return CompletionChoice(
        index=index, text=completion.text, finish_reason=completion.finish_reason, logprobs=logprobs,
        token_ids=completion.token_ids if request.return_token_ids else None, stop_reason=completion.stop_reason,
    )


def _usage(results: list[list[Completion]]) -> Usage:
    prompt_tokens = sum(samples[0].prompt_tokens for samples in results if samples)
    completion_tokens = sum(len(completion.token_ids) for samples in results for completion in samples)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def serve(model_name: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          dtype: str = "auto", batch_window_seconds: float = DEFAULT_WINDOW_SECONDS,
          prm: ProcessRewardConfig | None = None) -> None:
    """Load a model and serve it until interrupted: for generation, or (with `prm`) as a process reward model."""
    import uvicorn

    from rftt.models import load_model

    model, tokenizer = load_model(model_name, dtype=dtype)
    model.eval()
    if prm is not None:
        scorer = HFProcessRewardModel(model, tokenizer, prm.step_tag, prm.good_token, prm.bad_token)
        app = create_app(None, model_name, api_key=api_key, process_rewards=scorer)
    else:
        app = create_app(HFEngine(model, tokenizer), model_name, api_key=api_key,
                         batch_window_seconds=batch_window_seconds)
    uvicorn.run(app, host=host, port=port, log_level="warning")
