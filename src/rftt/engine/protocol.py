"""The OpenAI-compatible completions protocol, with the extensions rftt's server and client share.

Extensions (also understood by vLLM's server): `top_k`, `stop_token_ids`, `ignore_eos`,
`return_token_ids` (each choice then carries its `token_ids`), and choice `stop_reason`.
rftt's own: the `/v1/next_token_logprobs` endpoint.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rftt.engine.types import MAX_PENALTY, MAX_TOP_LOGPROBS, Completion, SamplingParams

API_KEY_ENVIRONMENT_VARIABLE = "RFTT_API_KEY"
"""Where `rftt serve` and the openai engine read the bearer key when none is given."""

PromptField = Union[str, list[str], list[int], list[list[int]]]
DEFAULT_COMPLETION_TOKENS = 16
"""OpenAI's default length limit for /v1/completions."""
DEFAULT_REPLY_TOKENS = 1024
"""A chat reply's length limit when the request sets none (never past the model's context): the engine reserves
room for each row's limit, so an unbounded default would leave room for few rows."""


class StreamOptions(BaseModel):
    """`stream_options`: with `include_usage`, a last chunk carries the token counts."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


def openai_error(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    """OpenAI's error object: what clients show (`message`), its kind, and the field it is about."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class SamplingFields(BaseModel):
    """Sampling fields shared by completions and chat completions. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    top_k: int = Field(0, ge=-1)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float = Field(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)
    frequency_penalty: float = Field(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)

    @model_validator(mode="after")
    def _streaming_options_need_a_stream(self) -> "SamplingFields":
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        if self.stream and self.top_logprobs_asked() is not None:
            raise ValueError("logprobs: not available in a streamed response (ask without stream)")
        return self

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def top_logprobs_asked(self) -> int | None:
        """How many most likely tokens per position the request asks for (None: no log-probabilities)."""
        raise NotImplementedError

    def sampling_params(self, max_new_tokens: int) -> SamplingParams:
        """The engine's SamplingParams for this request (`top_k` -1 or 0 both mean no top-k)."""
        return SamplingParams(
            n=self.n, temperature=self.temperature, top_p=self.top_p, top_k=max(self.top_k, 0),
            max_new_tokens=max_new_tokens, stop=self.stops(), stop_token_ids=tuple(self.stop_token_ids),
            seed=self.seed, ignore_eos=self.ignore_eos, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, top_logprobs=self.top_logprobs_asked() or 0,
        )


class CompletionRequest(SamplingFields):
    """POST /v1/completions. OpenAI fields rftt cannot honour must keep their neutral values."""

    prompt: PromptField
    max_tokens: int = Field(DEFAULT_COMPLETION_TOKENS, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: Literal[False] = False
    best_of: int | None = None
    return_token_ids: bool = False

    @model_validator(mode="after")
    def _best_of_is_n(self) -> "CompletionRequest":
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of must equal n (rftt returns every sample)")
        return self

    def top_logprobs_asked(self) -> int | None:
        return self.logprobs

    @model_validator(mode="after")
    def _no_empty_prompt(self) -> "CompletionRequest":
        if self.prompt == [] or any(prompt == [] for prompt in self.prompts()):
            raise ValueError("prompt: an empty list of token ids cannot be continued")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts (text or token ids)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(item, int) for item in prompt):
            return [list(prompt)]
        return list(prompt)


class TextPart(BaseModel):
    """A message's content given as parts: rftt serves text parts only."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message; `developer` is OpenAI's newer name for `system`, and content may come as text parts."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None
    tool_call_id: str | None = None

    def for_template(self) -> dict[str, str]:
        """The message as chat templates take it: a role they know and plain-text content."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(SamplingFields):
    """POST /v1/chat/completions: the sampling fields, with messages instead of a prompt; without a length limit
    a reply may run to the end of the model's context."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _one_length_limit_and_top_logprobs_with_logprobs(self) -> "ChatRequest":
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_completion_tokens: differs from max_tokens (its older name); send one")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    def length_limit(self) -> int | None:
        """The reply's length limit, under either name (None: up to the end of the context)."""
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_asked(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class Answer(BaseModel):
    """What every answer and every streamed chunk of one starts with."""

    id: str
    created: int
    model: str


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: Logprobs | None = None
    token_ids: list[int] | None = None
    stop_reason: str | int | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, results: list[list[Completion]]) -> "Usage":
        """The token counts of a request's completions (each prompt counted once)."""
        prompt_tokens = sum(samples[0].prompt_tokens for samples in results if samples)
        completion_tokens = sum(len(completion.token_ids) for samples in results for completion in samples)
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class CompletionResponse(Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage = Field(default_factory=Usage)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class ChatReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatReply
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChatLogprobs | None = None


class ChatResponse(Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage = Field(default_factory=Usage)


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    stop_reason: str | int | None = None


class CompletionChunk(Answer):
    """One server-sent event of a streamed /v1/completions answer."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatChunk(Answer):
    """One server-sent event of a streamed /v1/chat/completions answer."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class NextTokenRequest(BaseModel):
    """POST /v1/next_token_logprobs (rftt): log-probabilities of candidate next tokens after each prefix."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prefixes: list[Union[str, list[int]]]
    candidate_token_ids: list[int] = Field(min_length=1)


class NextTokenResponse(BaseModel):
    logprobs: list[list[float]]


class ProcessRewardItem(BaseModel):
    question: str
    steps: list[str]


class ProcessRewardRequest(BaseModel):
    """POST /v1/process_rewards (rftt, with `--prm`): one score per step of each item."""

    model_config = ConfigDict(extra="forbid")

    items: list[ProcessRewardItem] = Field(min_length=1)


class ProcessRewardResponse(BaseModel):
    scores: list[list[float]]
