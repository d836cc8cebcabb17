"""What an RL run writes as it goes: one JSON line of metrics per step (`metrics.jsonl`), the same numbers as
TensorBoard scalars (`tensorboard/`, x-axis: updates done, so the evaluation before training sits at 0), and
every trajectory each step trained on (`rollouts.jsonl`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rftt.jsonl import read_records

LOG_FILE = "metrics.jsonl"
ROLLOUT_FILE = "rollouts.jsonl"
TENSORBOARD_FOLDER = "tensorboard"


def keep_steps_before(path: Path, step: int) -> list[dict[str, Any]]:
    """Cut a per-step JSONL log back to the records of the steps before `step` (none when the run starts from
    step 0: it repeats the evaluation before training too), and return them."""
    records = read_records(path, repair=True) if step and path.exists() else []
    kept = [record for record in records if record["step"] < step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
    return kept


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics record, nested keys joined by '/' (`seconds/rollout`, `moves/verify`)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            flat[name] = float(value)
    return flat


class MetricsLog:
    """Appends each step's metrics to the JSONL file and to TensorBoard; first drops what an earlier run in the
    folder logged for the steps that will run again (the JSONL lines, and TensorBoard's events by purge step)."""

    def __init__(self, folder: Path, resume_step: int = 0, saved_metrics: dict[str, Any] | None = None):
        """`saved_metrics`: the log line the resumed checkpoint kept, written again if the log lacks it."""
        from torch.utils.tensorboard import SummaryWriter

        self.path = folder / LOG_FILE
        kept = keep_steps_before(self.path, resume_step)
        rewrite = saved_metrics is not None and saved_metrics["step"] not in {record["step"] for record in kept}
        first_dropped = (resume_step if rewrite else resume_step + 1) if resume_step else 0  # in TensorBoard's steps
        self.writer = SummaryWriter(str(folder / TENSORBOARD_FOLDER), purge_step=first_dropped)
        if rewrite:
            self.write(saved_metrics)

    def write(self, metrics: dict[str, Any]) -> None:
        """TensorBoard first, the JSONL line last: a run killed in between has the step in neither record of it
        that a resume trusts (the JSONL line), so the resumed run logs it again instead of losing its scalars."""
        for name, value in scalars(metrics).items():
            self.writer.add_scalar(name, value, global_step=metrics["step"] + 1)
        self.writer.flush()
        with self.path.open("a") as file:
            file.write(json.dumps(metrics) + "\n")

    def close(self) -> None:
        self.writer.close()


class RolloutLog:
    """Appends the trajectories each step trained on, one JSON line each; first drops what an earlier run in
    the folder logged for the steps that will run again."""

    def __init__(self, folder: Path, resume_step: int = 0):
        self.path = folder / ROLLOUT_FILE
        keep_steps_before(self.path, resume_step)

    def write(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
