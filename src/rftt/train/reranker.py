"""`rftt train-reranker`: a correctness classifier for sampled solutions, and reranking at inference.

As in ReFT, the reranker is the policy's backbone with a sequence-classification head,
trained on solutions sampled from the policy and labelled correct or not by the verifier.
Its training data is an `rftt eval` run with several samples per problem (its
problems.jsonl holds prompts, completions and per-sample correctness). It is saved as a
Hugging Face checkpoint and reloaded with `load_reranker`; `rerank` picks, among a
problem's samples with an answer, the one the reranker scores highest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from rftt.config import trainer_device
from rftt.data import DataError
from rftt.jsonl import read_records
from rftt.models import DEFAULT_MODEL, RFTT_CONFIG_FILE, resolve_checkpoint
from rftt.precision import AUTO_DEVICE
from rftt.train import CHECKPOINT_FOLDER, FINAL_FOLDER

POSITIVE = 1


@dataclass(frozen=True)
class RerankerConfig:
    model: str = DEFAULT_MODEL
    data: str = "runs/eval-train-samples/problems.jsonl"
    max_length: int = 512
    learning_rate: float = 1e-5
    epochs: float = 2.0
    batch_size: int = 8
    seed: int = 0
    device: str = AUTO_DEVICE
    output_dir: str = "runs/reranker"


@dataclass(frozen=True)
class ScoredSample:
    text: str
    label: int


def labelled_samples(path: str | Path) -> list[ScoredSample]:
    """(prompt + completion, correct) pairs from an eval run's per-problem records."""
    samples = []
    for record in read_records(path):
        for completion, correct in zip(record["completions"], record["sample_correct"]):
            samples.append(ScoredSample(record["prompt"] + completion, int(bool(correct))))
    return samples


class _Encoded(Dataset):
    def __init__(self, samples: Sequence[ScoredSample], tokenizer: Any, max_length: int):
        self.items = [{"input_ids": tokenizer.encode(sample.text, add_special_tokens=False)[-max_length:],
                       "labels": sample.label} for sample in samples]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def _collate(pad_id: int):
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, item in enumerate(items):
            input_ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
            attention_mask[row, : len(item["input_ids"])] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": torch.tensor([item["labels"] for item in items])}

    return collate


def load_reranker(path: str, device: str = "cpu") -> tuple[Any, Any]:
    """A trained reranker (model, tokenizer) from its folder, or the backbone of a policy with a new head, on
    `device`."""
    folder = resolve_checkpoint(path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def train_reranker(config: RerankerConfig) -> dict[str, Any]:
    """Train on labelled samples and save to `output_dir/final`."""
    device = trainer_device("config.device", config.device)
    if not Path(config.data).is_file():
        raise DataError(str(config.data), None, None, "no such file (the problems.jsonl of an `rftt eval --method "
                        "maj@k` run on training problems)")
    samples = labelled_samples(config.data)
    positives = sum(sample.label for sample in samples)
    if not samples or positives in (0, len(samples)):
        raise DataError(str(config.data), None, None, "the reranker needs both correct and wrong samples "
                        f"({positives} correct of {len(samples)})")
    model, tokenizer = load_reranker(config.model)
    output = Path(config.output_dir)
    arguments = TrainingArguments(
        output_dir=str(output / CHECKPOINT_FOLDER), per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, seed=config.seed, report_to=[],
        save_strategy="no", logging_steps=10, remove_unused_columns=False,
        use_cpu=device.type == "cpu")
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output / "tensorboard"))
    trainer = Trainer(model=model, args=arguments, train_dataset=_Encoded(samples, tokenizer, config.max_length),
                      data_collator=_collate(tokenizer.pad_token_id))
    result = trainer.train()
    final = output / FINAL_FOLDER
    trainer.save_model(str(final))
    tokenizer.save_pretrained(final)
    summary = {"samples": len(samples), "correct": positives, "train_loss": result.training_loss,
               "steps": result.global_step}
    (final / RFTT_CONFIG_FILE).write_text(json.dumps({"stage": "reranker", "base_model": config.model,
                                                      "device": str(device), "summary": summary}, indent=2) + "\n")
    return summary


@torch.inference_mode()
def score(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> list[float]:
    """P(correct) of each text."""
    model.eval()
    encoded = _Encoded([ScoredSample(text, 0) for text in texts], tokenizer, max_length)
    collate = _collate(tokenizer.pad_token_id)
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = collate([encoded[index] for index in range(start, min(start + batch_size, len(encoded)))])
        logits = model(input_ids=batch["input_ids"].to(model.device),
                       attention_mask=batch["attention_mask"].to(model.device)).logits
        scores.extend(torch.softmax(logits.float(), dim=-1)[:, POSITIVE].tolist())
    return scores


def rerank(answers: Sequence[str | None], scores: Sequence[float]) -> int | None:
    """The index of the highest-scored sample that has an answer, or None if none has one."""
    valid = [index for index, answer in enumerate(answers) if answer is not None]
    return max(valid, key=lambda index: scores[index]) if valid else None
