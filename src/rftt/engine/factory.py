"""Build an engine (and the tokenizer that renders its prompts) from configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rftt.engine import make_engine
from rftt.engine.base import Engine
from rftt.engine.hf import DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_PREFIX_CACHE_MIB
from rftt.engine.openai_http import DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT_SECONDS
from rftt.engine.protocol import API_KEY_ENVIRONMENT_VARIABLE
from rftt.engine.types import EngineError


@dataclass(frozen=True)
class EngineConfig:
    """Which backend generates, and its limits. The `openai` key is read from $RFTT_API_KEY."""

    kind: Literal["hf", "openai", "vllm"] = "hf"
    base_url: str | None = None
    served_model: str | None = None
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    prefix_cache_mib: int = DEFAULT_PREFIX_CACHE_MIB
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    vllm_options: dict[str, Any] | None = None


def load_tokenizer(model_name: str) -> Any:
    """The tokenizer of a model name or path, without loading its weights."""
    from transformers import AutoTokenizer

    from rftt.models import resolve_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(model_name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_engine(config: EngineConfig, model_name: str, precision: str = "auto",
                 device: str | torch.device = "cpu") -> tuple[Engine, Any]:
    """The engine a config describes (an in-process model on `device`, its weights in `precision`), and the
    tokenizer for rendering prompts."""
    if config.kind == "hf":
        from rftt.models import load_model

        model, tokenizer = load_model(model_name, dtype=precision, device=device)
        model.eval()
        engine = make_engine("hf", model=model, tokenizer=tokenizer, max_batch_tokens=config.max_batch_tokens,
                             max_batch_rows=config.max_batch_rows, prefix_cache_mib=config.prefix_cache_mib)
        return engine, tokenizer
    tokenizer = load_tokenizer(model_name)
    if config.kind == "openai":
        if not config.base_url:
            raise EngineError("engine.kind=openai needs engine.base_url (for example http://127.0.0.1:8000)")
        engine = make_engine("openai", base_url=config.base_url, model=config.served_model or model_name,
                             api_key=os.environ.get(API_KEY_ENVIRONMENT_VARIABLE), tokenizer=tokenizer,
                             timeout=config.timeout_seconds, max_concurrency=config.max_concurrency)
        return engine, tokenizer
    from rftt.models import resolve_checkpoint

    return make_engine("vllm", model=resolve_checkpoint(model_name), **(config.vllm_options or {})), tokenizer
