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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from rftt.config import configured_device
from rftt.engine.hf import HFEngine
from rftt.engine.protocol import (
    DEFAULT_REPLY_TOKENS,
    ChatChoice,
    ChatLogprobs,
    ChatReply,
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
    SamplingFields,
    TokenLogprob,
    TopLogprob,
    Usage,
    openai_error,
)
from rftt.engine.types import Completion, EngineError, Prompt
from rftt.precision import AUTO_DEVICE
from rftt.search.process_rewards import PROCESS_REWARDS_PATH, HFProcessRewardModel, ProcessRewardConfig
from rftt.serve.batching import DEFAULT_WINDOW_SECONDS, QueuedRequest, RequestBatcher
from rftt.serve.streaming import ChatChunks, ChunkWriter, CompletionChunks, stream_events

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def create_app(engine: HFEngine | None, model_name: str, *, api_key: str | None = None,
               batch_window_seconds: float = DEFAULT_WINDOW_SECONDS, reply_tokens: int = DEFAULT_REPLY_TOKENS,
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
        return JSONResponse(status_code=400, content=openai_error(str(error)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=400, content=_validation_error(error))

    @app.exception_handler(HTTPException)
    async def refused(_: Request, error: HTTPException) -> JSONResponse:
        kind = "authentication_error" if error.status_code == 401 else "invalid_request_error"
        return JSONResponse(status_code=error.status_code, content=openai_error(str(error.detail), kind))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "batching": asdict(batcher.statistics)}

    if process_rewards is not None:

        @app.post(PROCESS_REWARDS_PATH, dependencies=[Depends(authorised)])
        async def score_process(request: ProcessRewardRequest) -> ProcessRewardResponse:
            items = [(item.question, item.steps) for item in request.items]
            return ProcessRewardResponse(scores=await batcher.run_exclusive(lambda: process_rewards.score_steps(items)))

    if engine is not None:
        _add_generation_routes(app, engine, batcher, model_name, authorised, reply_tokens)
    app.state.batcher = batcher
    return app


def _add_generation_routes(app: FastAPI, engine: HFEngine, batcher: RequestBatcher, model_name: str,
                           authorised, reply_tokens: int) -> None:
    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "rftt"}]}

    @app.post("/v1/completions", dependencies=[Depends(authorised)], response_model=None)
    async def completions(request: CompletionRequest) -> CompletionResponse | StreamingResponse:
        prompts, params = request.prompts(), request.sampling_params(request.max_tokens)
        if request.stream:
            chunks = CompletionChunks(f"cmpl-{uuid.uuid4().hex}", int(time.time()), model_name)
            return _streamed(batcher.submit(prompts, params, streamed=True), engine, chunks, request)
        results = await batcher.generate(prompts, params)
        choices = [
            _choice(engine, completion, prompt_index * request.n + sample, request)
            for prompt_index, samples in enumerate(results)
            for sample, completion in enumerate(samples)
        ]
        return CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                                  choices=choices, usage=Usage.of(results))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)], response_model=None)
    async def chat_completions(request: ChatRequest) -> ChatResponse | StreamingResponse:
        if engine.tokenizer.chat_template is None:
            raise EngineError(f"{model_name} has no chat template: use /v1/completions with a formatted prompt")
        messages = [message.for_template() for message in request.messages]
        prompt: Prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        limit = request.length_limit()
        if not limit:
            prompt = engine.encode(prompt)  # tokenized once: for the context left and for the engine
            limit = min(reply_tokens, _context_left(engine, len(prompt)))
        params = request.sampling_params(limit)
        if request.stream:
            chunks = ChatChunks(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model_name)
            return _streamed(batcher.submit([prompt], params, streamed=True), engine, chunks, request)
        [samples] = await batcher.generate([prompt], params)
        choices = [
            ChatChoice(index=index, message=ChatReply(content=completion.text),
                       finish_reason=completion.finish_reason,
                       logprobs=_chat_logprobs(engine, completion) if request.logprobs else None)
            for index, completion in enumerate(samples)
        ]
        return ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                            choices=choices, usage=Usage.of([samples]))

    @app.post("/v1/next_token_logprobs", dependencies=[Depends(authorised)])
    async def next_token_logprobs(request: NextTokenRequest) -> NextTokenResponse:
        logprobs = await batcher.run_exclusive(
            lambda: engine.next_token_logprobs(request.prefixes, request.candidate_token_ids))
        return NextTokenResponse(logprobs=logprobs)


def _validation_error(error: RequestValidationError) -> dict:
    """A refused request's problems as OpenAI's error object, each naming its field."""
    problems, fields = [], []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"] if part != "body")
        problems.append(f"{where}: {problem['msg']}" if where else problem["msg"])
        fields.append(where)
    return openai_error("; ".join(problems), param=next((field for field in fields if field), None))


def _streamed(submitted: QueuedRequest, engine: HFEngine, chunks: ChunkWriter, request: SamplingFields) -> StreamingResponse:
    """The answer to a queued request as server-sent events."""
    include_usage = request.stream_options is not None and request.stream_options.include_usage
    return StreamingResponse(stream_events(submitted, engine, chunks, include_usage), media_type="text/event-stream")


def _context_left(engine: HFEngine, prompt_tokens: int) -> int:
    """How many tokens fit after a prompt in the model's context (a chat reply's default length limit)."""
    left = engine.model.config.max_position_embeddings - prompt_tokens
    if left < 1:
        raise EngineError(f"messages: the prompt fills the model's context of {engine.model.config.max_position_embeddings} "
                          "tokens")
    return left


def _token_text(engine: HFEngine, token_id: int) -> str:
    """One token's text, as log-probability entries name it."""
    return engine.tokenizer.decode([token_id], skip_special_tokens=False)


def _choice(engine: HFEngine, completion: Completion, index: int, request: CompletionRequest) -> CompletionChoice:
    logprobs = None
    if request.logprobs is not None:
        tokens = [_token_text(engine, token_id) for token_id in completion.token_ids]
        offsets = [sum(len(token) for token in tokens[:position]) for position in range(len(tokens))]
        top = None
        if completion.top_logprobs is not None and request.logprobs:
            top = [{_token_text(engine, token_id): logprob for token_id, logprob in step} for step in completion.top_logprobs]
        logprobs = Logprobs(tokens=tokens, token_logprobs=completion.logprobs, top_logprobs=top, text_offset=offsets)
    return CompletionChoice(
        index=index, text=completion.text, finish_reason=completion.finish_reason, logprobs=logprobs,
        token_ids=completion.token_ids if request.return_token_ids else None, stop_reason=completion.stop_reason,
    )


def _chat_logprobs(engine: HFEngine, completion: Completion) -> ChatLogprobs:
    """Each token of a reply with its log-probability and the most likely tokens at its position."""
    def entry(token_id: int, logprob: float) -> TopLogprob:
        text = _token_text(engine, token_id)
        return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))

    steps = completion.top_logprobs or [[] for _ in completion.token_ids]
    return ChatLogprobs(content=[
        TokenLogprob(**entry(token_id, logprob).model_dump(), top_logprobs=[entry(*pair) for pair in step])
        for token_id, logprob, step in zip(completion.token_ids, completion.logprobs, steps)])


def serve(model_name: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          precision: str = "auto", device: str = AUTO_DEVICE, batch_window_seconds: float = DEFAULT_WINDOW_SECONDS,
          reply_tokens: int = DEFAULT_REPLY_TOKENS, prm: ProcessRewardConfig | None = None) -> None:
    """Load a model and serve it until interrupted: for generation, or (with `prm`) as a process reward model."""
    import uvicorn

    from rftt.models import load_model

    model, tokenizer = load_model(model_name, dtype=precision, device=configured_device("--device", device))
    model.eval()
    if prm is not None:
        scorer = HFProcessRewardModel(model, tokenizer, prm.step_tag, prm.good_token, prm.bad_token)
        app = create_app(None, model_name, api_key=api_key, process_rewards=scorer)
    else:
        app = create_app(HFEngine(model, tokenizer), model_name, api_key=api_key,
                         batch_window_seconds=batch_window_seconds, reply_tokens=reply_tokens)
    uvicorn.run(app, host=host, port=port, log_level="warning")
