"""What SFT and RL both do to a policy's weights: wrap them with LoRA adapters, and record a checksum per process
so a distributed run can be checked for agreement."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FINGERPRINT_FOLDER = "fingerprints"


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model: Any, settings: LoraSettings, token_ids: list[int]) -> Any:
    """The model wrapped with LoRA adapters; `token_ids` (the functional tokens) get trainable embedding rows."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
                        trainable_token_indices=token_ids or None)
    return get_peft_model(model, config)


def write_fingerprint(model: Any, output: Path, rank: int) -> None:
    """Each rank records a checksum of its weights, so a distributed run can be checked for agreement."""
    with torch.no_grad():
        total = sum(float(parameter.double().sum()) for parameter in model.parameters())
    folder = output / FINGERPRINT_FOLDER
    folder.mkdir(exist_ok=True)
    (folder / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "weight_sum": total}))
