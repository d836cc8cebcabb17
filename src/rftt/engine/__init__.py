"""Generation engines behind one interface: `hf` (in process), `openai` (HTTP), `vllm` (GPU)."""

from __future__ import annotations

from typing import Any

from rftt.engine.base import Engine
from rftt.engine.types import FINISH_REASONS, Completion, EngineError, Prompt, SamplingParams, StreamRequest

ENGINE_KINDS = ("hf", "openai", "vllm")


def make_engine(kind: str, **options: Any) -> Engine:
    """An engine by name: `hf` (model=, tokenizer=), `openai` (base_url=, model=), `vllm` (model=)."""
    if kind == "hf":
        from rftt.engine.hf import HFEngine

        return HFEngine(**options)
    if kind == "openai":
        from rftt.engine.openai_http import OpenAIEngine

        return OpenAIEngine(**options)
    if kind == "vllm":
        from rftt.engine.vllm_backend import VLLMEngine

        return VLLMEngine(**options)
    raise EngineError(f"unknown engine {kind!r}; choose from {', '.join(ENGINE_KINDS)}")


__all__ = ["ENGINE_KINDS", "FINISH_REASONS", "Completion", "Engine", "EngineError", "Prompt", "SamplingParams", "StreamRequest",
           "make_engine"]
