"""What every generation engine takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Sequence, Union

from rftt.errors import RfttError

Prompt = Union[str, Sequence[int]]
"""A prompt as text (already templated) or as token ids."""

FINISH_REASONS = ("stop", "length")
MAX_PENALTY = 2.0
MAX_TOP_LOGPROBS = 20
"""The bounds OpenAI's API puts on presence/frequency penalties and on top log-probabilities."""

TokenListener = Callable[[Sequence[tuple[int, int, int]]], Collection[int]]
"""Told after each decoding step the (request number, sample, token id) of every live row; returns the numbers of
requests to stop at once (a streaming client that left), whose rows then end without a completion."""


class EngineError(RfttError):
    """A generation request that cannot be served: bad parameters, an unreachable server, a bad answer."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: `temperature=0` is greedy; `top_k=0` and `top_p=1` switch those filters off.

    Generation ends at `max_new_tokens`, at the end-of-sequence token (unless `ignore_eos`),
    at any of `stop_token_ids` (kept in the output, so functional tokens can close steps),
    or at any of `stop` strings (cut from the text). `seed` makes sampling reproducible.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        checks = {
            "n": self.n >= 1,
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "stop": all(isinstance(text, str) and text for text in self.stop),
            "presence_penalty": abs(self.presence_penalty) <= MAX_PENALTY,
            "frequency_penalty": abs(self.frequency_penalty) <= MAX_PENALTY,
            "top_logprobs": 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
        }
        for name, valid in checks.items():
            if not valid:
                raise EngineError(f"sampling parameter {name}={getattr(self, name)!r} is out of range")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class StreamRequest:
    """One prompt fed to `Engine.stream`: `n` samples, each at most `max_new_tokens` long (None: the
    stream's `SamplingParams.max_new_tokens`, which is also the upper bound)."""

    prompt: Prompt
    n: int = 1
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of a prompt.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the model's own
    distribution (temperature 1, no filtering), as a separate forward pass would give it.
    `stop_reason` is the stop string or token id that ended it (None at the length limit).
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per token: (token id, log-probability), best first

    @property
    def cumulative_logprob(self) -> float:
        return float(sum(self.logprobs))
