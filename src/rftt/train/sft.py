"""`rftt sft`: supervised warm-up on search paths (RFTT) or gold solutions (ReFT), full or LoRA.

Built on the transformers Trainer: gradient accumulation, schedules, bf16/fp32, gradient
checkpointing, a dev-split evaluation each epoch, TensorBoard and JSONL logs, a progress
bar, DDP under `torchrun`/`accelerate launch`, and exact resume (optimizer, scheduler,
RNG and data order are restored from the last checkpoint). The result is a Hugging Face
checkpoint in `output_dir/final`: the model or LoRA adapter, the tokenizer with the
functional tokens and their ids, and the config that made it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from rftt.config import configured_training_precision, to_dict, trainer_device
from rftt.data import DataError
from rftt.models import DEFAULT_MODEL, RFTT_CONFIG_FILE, load_model
from rftt.precision import AUTO_DEVICE, DTYPE_NAMES, Precision, uses_bf16
from rftt.run_folder import RunFolder, claim_run_folder
from rftt.tokens import FunctionalTokens, StepTags, add_functional_tokens, save_step_tags
from rftt.tokens.vocabulary import text_tags
from rftt.train import CHECKPOINT_FOLDER, FINAL_FOLDER, check_resumable
from rftt.train.sft_data import (
    DataReport,
    SFTCollator,
    SFTDataConfig,
    SFTExample,
    load_examples,
    pack,
    tokenize,
)
from rftt.train.weights import LoraSettings, apply_lora, write_fingerprint

LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class SFTConfig:
    """One warm-up run. Re-running with `resume=True` continues from its last checkpoint.
    `functional_token_step_multiplier`: full fine-tuning takes steps this many times larger for the functional
    tokens' embedding rows (see `LargerStepsForNewRows`); 1 turns it off. `functional_tokens: false` keeps the
    step tags of the functional style as ordinary text (the ablation; see `rftt.tokens.text_tags`).
    `precision`: `bf16` is the Trainer's mixed bf16; `native` uses it where the device computes bf16 natively,
    `auto` when the checkpoint is stored in bf16 (`rftt.precision`).
    `device`: `auto` (the GPU when there is one), `cpu` or `cuda` (see `rftt.config.trainer_device`)."""

    renamed_values: ClassVar[dict[str, dict[str, str]]] = {"precision": DTYPE_NAMES}

    model: str = DEFAULT_MODEL
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    functional_tokens: bool = True
    lora: LoraSettings | None = None
    learning_rate: float = 2e-5
    functional_token_step_multiplier: float = 10.0
    epochs: float = 2.0
    max_steps: int = -1
    max_minutes: float | None = None
    batch_size: int = 8
    gradient_accumulation: int = 1
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Precision = "auto"
    device: str = AUTO_DEVICE
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    report_to: tuple[str, ...] = ("tensorboard",)
    output_dir: str = "runs/sft"
    resume: bool = False


class _Rows(Dataset):
    def __init__(self, rows: Sequence[Any]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.rows[index]


class JsonlLogger(TrainerCallback):
    """Every logged metric, one JSON line each, on the main process."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as file:
                file.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class LargerStepsForNewRows(TrainerCallback):
    """Multiplies every optimizer step of the given embedding rows (input matrix, and output matrix when untied)
    by `factor`. New functional tokens start where the model never predicts them, and a learning rate made for
    the pretrained weights moves their rows too little. Measured on SmolLM2-135M with phase-1 paths: after 3
    epochs at 2e-5 the opening `<next_step>` of a training trace had log-prob -9.0 with factor 1, -7.7 with
    10 and -3.5 with 100 (where greedy answers then repeated functional tokens); 4 epochs at 1e-4 with factor
    10 gave answers that are all well-formed traces."""

    def __init__(self, token_ids: Sequence[int], factor: float):
        self.token_ids, self.factor = torch.tensor(sorted(token_ids)), factor
        self.before: list[torch.Tensor] = []

    @staticmethod
    def _matrices(model: Any) -> list[torch.Tensor]:
        matrices = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not matrices[0]:
            matrices.append(output.weight)
        return matrices

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.before = [matrix.detach()[self.token_ids].clone() for matrix in self._matrices(model)]

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for matrix, before in zip(self._matrices(model), self.before):
                rows = matrix[self.token_ids]
                matrix[self.token_ids] = before + self.factor * (rows - before)


class TimeBudget(TrainerCallback):
    """Stops training (with a checkpoint) once `minutes` of training have passed; every rank stops at the same step.

    The learning-rate schedule is still planned on `max_steps`/`epochs`, so a run stopped
    by its budget ends before the schedule does; a resumed run gets a fresh budget.
    """

    def __init__(self, minutes: float):
        self.seconds, self.started = minutes * 60, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        over = torch.tensor([float(time.perf_counter() - self.started > self.seconds)], device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
        if over.item():
            control.should_training_stop = control.should_save = True


def split_dev(examples: Sequence[SFTExample], fraction: float, limit: int) -> tuple[list[SFTExample], list[SFTExample]]:
    """A dev split chosen by a hash of the problem, so all paths of one problem fall on the same side."""
    def bucket(example: SFTExample) -> float:
        return int(hashlib.sha256(example.group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    dev = [example for example in examples if bucket(example) < fraction][:limit]
    dev_ids = {id(example) for example in dev}
    return [example for example in examples if id(example) not in dev_ids], dev


def _training_arguments(config: SFTConfig, output: Path, steps_per_epoch: int, has_dev: bool) -> TrainingArguments:
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    device = torch.device(config.device)  # resolved by run_sft
    return TrainingArguments(
        output_dir=str(output / CHECKPOINT_FOLDER), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps,
        lr_scheduler_type=config.scheduler, warmup_steps=int(config.warmup_ratio * total_steps),
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        bf16=uses_bf16(config.precision, device),
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        eval_strategy="epoch" if has_dev else "no", report_to=list(config.report_to),
        seed=config.seed, data_seed=config.seed,
        remove_unused_columns=False, dataloader_num_workers=0,
        ddp_backend="gloo" if device.type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        use_cpu=device.type == "cpu",
    )


def _prepare_data(config: SFTConfig, tokenizer: Any, report: DataReport,
                  tags: StepTags | None) -> tuple[list[Any], list[Any]]:
    examples = load_examples(config.data, report)
    train, dev = split_dev(examples, config.data.dev_fraction, config.data.dev_max)
    encode = (lambda text: tags.encode_trace(text, tokenizer)) if tags is not None else None
    train_rows: list[Any] = tokenize(train, tokenizer, config.data, report, encode)
    dev_rows: list[Any] = tokenize(dev, tokenizer, config.data, DataReport(), encode)
    if config.data.packing:
        train_rows = pack(train_rows, config.data.max_length)
        dev_rows = pack(dev_rows, config.data.max_length)
    return train_rows, dev_rows


def _callbacks(config: SFTConfig, output: Path, tokens: FunctionalTokens | None) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [JsonlLogger(output / LOG_FILE)]
    if config.max_minutes is not None:
        callbacks.append(TimeBudget(config.max_minutes))
    if tokens is not None and config.lora is None and config.functional_token_step_multiplier != 1:
        callbacks.append(LargerStepsForNewRows(tokens.all_ids, config.functional_token_step_multiplier))
    return callbacks


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (its trainer_state.json is written last), so a save cut
    short by a crash or a full disk is skipped, not loaded."""
    steps = sorted((int(path.name.split("-")[-1]), path) for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file())
    return str(steps[-1][1]) if steps else None


SFT_RUN_FOLDER = RunFolder("config.json", ("model", "data.path", "output_dir"), frozenset({
    "resume", "max_minutes", "max_steps", "epochs", "save_steps", "save_total_limit", "logging_steps", "report_to",
    "device", "output_dir"}))
"""A warm-up continues with more steps or epochs, another time budget, checkpoint or logging schedule, or device."""


def run_sft(config: SFTConfig) -> dict[str, Any]:
    """Train, save `output_dir/final`, and return a summary (losses, steps, timing, data report); the record
    in `final` names the device it ran on."""
    config = replace(config, device=str(trainer_device("config.device", config.device)),
                     precision=configured_training_precision("config.precision", config.precision, config.model))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:  # one writer in a distributed run
        claim_run_folder(output, SFTConfig, to_dict(config), SFT_RUN_FOLDER)
    checkpoint = last_complete_checkpoint(output / CHECKPOINT_FOLDER) if config.resume else None
    if config.resume:
        check_resumable(output, checkpoint is not None)
    model, tokenizer = load_model(config.model, dtype=torch.float32)
    tags: StepTags | None = None
    new_token_ids: list[int] = []
    if config.data.style == "functional" and config.functional_tokens:
        before = len(tokenizer)
        tags = add_functional_tokens(model, tokenizer)
        new_token_ids = [token_id for token_id in tags.all_ids if token_id >= before]
    elif config.data.style == "functional":
        tags = text_tags(tokenizer, f"config.functional_tokens (false) with config.model {config.model!r}")
    tokens = tags if isinstance(tags, FunctionalTokens) else None
    report = DataReport()
    train_rows, dev_rows = _prepare_data(config, tokenizer, report, tags)
    if not train_rows:
        source = config.data.path or (config.data.dataset.name if config.data.dataset else "sft data")
        raise DataError(str(source), None, None, f"no training examples left ({report}); for search data, the "
                        "search found no correct path: search more problems or with more rollouts")
    if config.lora is not None:
        model = apply_lora(model, config.lora, list(tokens.all_ids) if tokens else [])
    steps_per_epoch = math.ceil(len(train_rows) / (config.batch_size * config.gradient_accumulation))
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output / "tensorboard")
    arguments = _training_arguments(config, output, steps_per_epoch, bool(dev_rows))
    trainer = Trainer(model=model, args=arguments, train_dataset=_Rows(train_rows),
                      eval_dataset=_Rows(dev_rows) if dev_rows else None, data_collator=SFTCollator(tokenizer.pad_token_id),
                      callbacks=_callbacks(config, output, tokens))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    write_fingerprint(trainer.model, output, arguments.process_index)
    summary = {
        "train_loss": result.training_loss, "steps": result.global_step, "seconds": seconds,
        "resumed_from": checkpoint, "examples": report.examples, "train_rows": len(train_rows),
        "dev_rows": len(dev_rows), "skipped": len(report.skipped), "truncated": report.truncated,
        "dropped_overlong": report.dropped_overlong, "new_functional_tokens": len(new_token_ids),
    }
    if dev_rows:
        summary["dev_loss"] = trainer.evaluate()["eval_loss"]
    if trainer.is_world_process_zero():
        record = {"stage": "sft", "base_model": config.model, "config": to_dict(config), "summary": summary,
                  "skipped_records": report.skipped[:50]}
        _save_final(trainer, tokenizer, tags, output / FINAL_FOLDER, record)
    return summary


def _save_final(trainer: Trainer, tokenizer: Any, tags: StepTags | None, folder: Path, record: dict[str, Any]) -> None:
    """The final checkpoint: weights (or adapter), tokenizer, step tags, and the run's record (config, summary)."""
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(folder)
    if tags is not None:
        save_step_tags(folder, tags)
    (folder / RFTT_CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")

