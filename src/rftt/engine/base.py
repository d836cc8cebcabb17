"""The one interface that search, RL rollouts and evaluation generate through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from rftt.engine.types import Completion, Prompt, SamplingParams


class Engine(ABC):
    """A generation backend. `generate` returns, for each prompt, `params.n` completions."""

    name: str = "engine"

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """Sample `params.n` completions for each prompt (text or token ids)."""

    @abstractmethod
    def next_token_logprobs(self, prefixes: Sequence[Prompt], candidate_token_ids: Sequence[int]) -> list[list[float]]:
        """For each prefix, the log-probability of each candidate as the very next token (full vocabulary)."""

    def close(self) -> None:
        """Release what the engine holds (servers, processes, GPU memory)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()
