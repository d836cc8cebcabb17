"""Process rewards: a score in [0, 1] for every step of a reasoning trace. Three interchangeable sources.

- `tree_value_rewards`: the tree's own Monte Carlo estimates, Q/N of each step's node
  (no extra model; available once a search has run);
- `HFProcessRewardModel`: a Hugging Face PRM scored the Math-Shepherd way, the probability
  of the "good" label token (against the "bad" one) at a tag placed after each step;
- `HTTPProcessRewardModel`: the same served over HTTP by `rftt serve --prm MODEL`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

import httpx
import torch

from rftt.engine.protocol import API_KEY_ENVIRONMENT_VARIABLE
from rftt.engine.types import EngineError
from rftt.rewards import OUTCOME_WEIGHT, PROCESS_WEIGHT
from rftt.search.tree import Node, Tree

PROCESS_REWARDS_PATH = "/v1/process_rewards"
MATH_SHEPHERD_STEP_TAG = " ки"
MATH_SHEPHERD_GOOD = "+"
MATH_SHEPHERD_BAD = "-"


class ProcessRewardModel(Protocol):
    def score_steps(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """For each (question, step texts), one score in [0, 1] per step."""


def tree_value_rewards(tree: Tree, node: Node) -> list[float]:
    """The Monte Carlo value Q/N of each step's node on the path to `node`."""
    return [step.value for step in tree.path(node)]


def _single_token(tokenizer: Any, text: str, role: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise EngineError(f"the process reward model's {role} {text!r} is {len(ids)} tokens; it must be exactly one")
    return ids[0]


@dataclass
class HFProcessRewardModel:
    """A Math-Shepherd-style PRM: `question Step 1: text<tag>Step 2: text<tag>...`, P(good | tag) per step."""

    model: Any
    tokenizer: Any
    step_tag: str = MATH_SHEPHERD_STEP_TAG
    good_token: str = MATH_SHEPHERD_GOOD
    bad_token: str = MATH_SHEPHERD_BAD
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.tag_id = _single_token(self.tokenizer, self.step_tag, "step tag")
        self.label_ids = [_single_token(self.tokenizer, self.good_token, "good label"),
                          _single_token(self.tokenizer, self.bad_token, "bad label")]

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Input ids with the tag token placed (by id, not by text) after each step, and the tag positions."""
        ids = self.tokenizer.encode(f"{question} ", add_special_tokens=False)
        positions = []
        for number, step in enumerate(steps, start=1):
            ids += self.tokenizer.encode(f"Step {number}: {step.strip()}", add_special_tokens=False)
            positions.append(len(ids))
            ids.append(self.tag_id)
            ids += self.tokenizer.encode("\n", add_special_tokens=False)
        return ids, positions

    @torch.inference_mode()
    def score_steps(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        scores: list[list[float]] = []
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        for start in range(0, len(items), self.batch_size):
            encoded = [self.encode(question, steps) for question, steps in items[start : start + self.batch_size]]
            width = max(len(ids) for ids, _ in encoded)
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, (ids, _) in enumerate(encoded):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            labels = torch.softmax(logits[..., self.label_ids].float(), dim=-1)[..., 0]
            scores.extend(labels[row, positions].tolist() for row, (_, positions) in enumerate(encoded))
        return scores


@dataclass
class HTTPProcessRewardModel:
    """A PRM behind `rftt serve --prm`: POST {items: [{question, steps}]} -> {scores: [[...]]}."""

    base_url: str
    timeout: float = 120.0
    api_key: str | None = None

    def score_steps(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"items": [{"question": question, "steps": list(steps)} for question, steps in items]}
        try:
            response = httpx.post(self.base_url.rstrip("/") + PROCESS_REWARDS_PATH, json=body, headers=headers,
                                  timeout=self.timeout)
        except httpx.TransportError as error:
            raise EngineError(f"process reward server {self.base_url} unreachable: {error}") from None
        if response.status_code != 200:
            raise EngineError(f"process reward server answered {response.status_code}: {response.text[:300]}")
        scores = response.json().get("scores")
        if not isinstance(scores, list) or len(scores) != len(items):
            raise EngineError(f"process reward server answered badly: {response.text[:300]}")
        return scores


@dataclass(frozen=True)
class ProcessRewardConfig:
    """Where process rewards come from: none, a Hugging Face PRM, or `rftt serve --prm` over HTTP."""

    kind: Literal["none", "hf", "http"] = "none"
    model: str | None = None
    url: str | None = None
    step_tag: str = MATH_SHEPHERD_STEP_TAG
    good_token: str = MATH_SHEPHERD_GOOD
    bad_token: str = MATH_SHEPHERD_BAD
    outcome_weight: float = OUTCOME_WEIGHT
    process_weight: float = PROCESS_WEIGHT


def build_process_rewards(config: ProcessRewardConfig, device: str = "cpu") -> ProcessRewardModel | None:
    """The process reward model a config names (an in-process one on the stage's `device`), or None."""
    if config.kind == "hf":
        from rftt.models import DEFAULT_MODEL, load_model

        model, tokenizer = load_model(config.model or DEFAULT_MODEL, device=device)
        return HFProcessRewardModel(model.eval(), tokenizer, config.step_tag, config.good_token, config.bad_token)
    if config.kind == "http":
        if not config.url:
            raise EngineError("process_rewards.kind=http needs process_rewards.url (where `rftt serve --prm` listens)")
        return HTTPProcessRewardModel(config.url, api_key=os.environ.get(API_KEY_ENVIRONMENT_VARIABLE))
    return None
