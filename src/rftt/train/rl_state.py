"""Saving and restoring an RL run: weights (or adapter), critic, optimizer, scheduler, RNG and step.

A checkpoint folder `step-N` is a loadable Hugging Face checkpoint plus `training_state.pt`;
it is written to a temporary folder and renamed, so a kill never leaves a half checkpoint
that resume would pick up.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch

from rftt.models import RFTT_CONFIG_FILE
from rftt.tokens import StepTags, save_step_tags

STATE_FILE = "training_state.pt"
VALUE_HEAD_FILE = "value_head.pt"
METRICS_FILE = "step_metrics.json"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": numpy.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


@dataclass
class TrainingState:
    """Everything a checkpoint holds of a run: the policy (or its adapter), tokenizer, step tags and critic head,
    and the optimizer and learning-rate schedule."""

    model: Any
    tokenizer: Any
    tokens: StepTags | None
    value_head: torch.nn.Module | None
    optimizer: Any
    scheduler: Any


@dataclass(frozen=True)
class CheckpointFolder:
    """Where a run's checkpoints go (`root/step-N`), and how many of the newest are kept."""

    root: Path
    keep: int


def save_model_folder(folder: Path, state: TrainingState, record: dict[str, Any]) -> None:
    """A Hugging Face checkpoint (model or adapter, tokenizer, step tags, critic, config record)."""
    folder.mkdir(parents=True, exist_ok=True)
    state.model.save_pretrained(folder)
    state.tokenizer.save_pretrained(folder)
    if state.tokens is not None:
        save_step_tags(folder, state.tokens)
    if state.value_head is not None:
        torch.save(state.value_head.state_dict(), folder / VALUE_HEAD_FILE)
    (folder / RFTT_CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def save_checkpoint(where: CheckpointFolder, step: int, state: TrainingState, record: dict[str, Any],
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write `root/step-N` atomically and keep only the newest checkpoints. `metrics`, the step's log line, is
    kept beside it, so a run killed after the save but before its log line was written keeps it."""
    final = where.root / f"step-{step}"
    partial = where.root / f".partial-step-{step}"
    shutil.rmtree(partial, ignore_errors=True)
    save_model_folder(partial, state, record)
    if metrics is not None:
        (partial / METRICS_FILE).write_text(json.dumps(metrics, default=str) + "\n")
    torch.save({"step": step, "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "rng": rng_state()}, partial / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(checkpoints(where.root))[:-where.keep]:
        shutil.rmtree(where.root / f"step-{old}", ignore_errors=True)
    return final


def checkpoint_metrics(folder: Path) -> dict[str, Any] | None:
    """The log line of the step a checkpoint was saved at, if it recorded one."""
    path = folder / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoints(root: Path) -> list[int]:
    """Steps of the complete checkpoints under `root`."""
    if not root.is_dir():
        return []
    return sorted(int(match.group(1)) for path in root.iterdir() if (match := _STEP_FOLDER.match(path.name))
                  and (path / STATE_FILE).is_file())


def load_training_state(folder: Path, live: TrainingState) -> int:
    """Restore everything from a checkpoint folder into the live objects; returns the step it was saved at."""
    model, value_head, optimizer, scheduler = live.model, live.value_head, live.optimizer, live.scheduler
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        weights = load_file(str(folder / "model.safetensors"))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {name for name in missing if "lm_head" in name}
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"{folder}: checkpoint does not match the model ({missing}, {unexpected})")
    if value_head is not None:
        value_head.load_state_dict(torch.load(folder / VALUE_HEAD_FILE))
    state = torch.load(folder / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    return int(state["step"])
