"""The OpenAI-compatible completions protocol, with the extensions rftt's server and client share.

Extensions (also understood by vLLM's server): `top_k`, `stop_token_ids`, `ignore_eos`,
`return_token_ids` (each choice then carries its `token_ids`), and choice `stop_reason`.
rftt's own: the `/v1/next_token_logprobs` endpoint.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rftt.engine.types import SamplingParams

API_KEY_ENVIRONMENT_VARIABLE = "RFTT_API_KEY"
"""Where `rftt serve` and the openai engine read the bearer key when none is given."""

PromptField = Union[str, list[str], list[int], list[list[int]]]


class SamplingFields(BaseModel):
    """Sampling fields shared by completions and chat completions. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: Literal[False] = False
    user: str | None = None
    top_k: int = Field(0, ge=-1)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_params(self) -> SamplingParams:
        """The engine's SamplingParams for this request (`top_k` -1 or 0 both mean no top-k)."""
        return SamplingParams(
            n=self.n, temperature=self.temperature, top_p=self.top_p, top_k=max(self.top_k, 0),
            max_new_tokens=self.max_tokens, stop=self.stops(), stop_token_ids=tuple(self.stop_token_ids),
            seed=self.seed, ignore_eos=self.ignore_eos,
        )


class CompletionRequest(SamplingFields):
    """POST /v1/completions. OpenAI fields rftt cannot honour must keep their neutral values."""

    prompt: PromptField
    logprobs: int | None = Field(None, ge=0)
    echo: Literal[False] = False
    best_of: int | None = None
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    return_token_ids: bool = False

    @model_validator(mode="after")
    def _best_of_is_n(self) -> "CompletionRequest":
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of must equal n (rftt returns every sample)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts (text or token ids)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(item, int) for item in prompt):
            return [list(prompt)]
        return list(prompt)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(SamplingFields):
    """POST /v1/chat/completions: the sampling fields, with messages instead of a prompt."""

    messages: list[ChatMessage] = Field(min_length=1)


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


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


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage = Field(default_factory=Usage)


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] | None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage = Field(default_factory=Usage)


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
