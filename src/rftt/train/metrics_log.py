"""What an RL run writes as it goes: one JSON line of metrics per step (`metrics.jsonl`), the same numbers as
TensorBoard scalars (`tensorboard/`, x-axis: updates done, so the evaluation before training sits at 0), and
every trajectory each step trained on (`rollouts.jsonl`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rftt.algos import masked_mean
from rftt.jsonl import read_records
from rftt.train.experience import Experience
from rftt.train.rollouts import TrajectoryBatch

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


def step_metrics(step: int, batch: TrajectoryBatch, rewards: torch.Tensor, kl: torch.Tensor | None,
                 mask: torch.Tensor) -> dict[str, Any]:
    """What a step's rollouts were like: reward, accuracy, answers stated, KL (absent for a run without a KL
    term), length, groups without reward variance (trained and rolled out), moves used."""
    groups: dict[int, list[float]] = {}
    for group, total in zip(batch.groups, rewards.sum(dim=1).tolist()):
        groups.setdefault(group, []).append(total)
    return {
        "step": step, "reward": float(rewards.sum(dim=1).mean()),
        "accuracy": sum(outcome.correct for outcome in batch.outcomes) / len(batch),
        "answered": sum(outcome.extracted is not None for outcome in batch.outcomes) / len(batch),
        **({"kl": float(masked_mean(kl, mask))} if kl is not None else {}),
        "response_length": float(mask.sum(dim=1).mean()),
        "zero_variance_groups": sum(max(v) == min(v) for v in groups.values()) / len(groups),
        "informative_rolled_out_groups": batch.informative_groups / max(batch.rolled_out_groups, 1),
        "rolled_out_accuracy": batch.rolled_out_accuracy,
        "moves": dict(batch.move_counts()),
    }


def trajectory_records(step: int, experience: Experience, tokenizer: Any, group_offset: int = 0) -> list[dict[str, Any]]:
    """One record per trajectory, as read back: its group (numbered from `group_offset`), problem, response text
    with the functional tokens, answer, summed reward and mean advantage over its tokens."""
    batch = experience.batch
    return [
        {"step": step, "group": group + group_offset, "problem": problem,
         "response": tokenizer.decode(response, skip_special_tokens=False), "answer": outcome.extracted,
         "correct": outcome.correct, "reward": reward, "advantage": advantage, "moves": moves}
        for group, problem, response, outcome, reward, advantage, moves in zip(
            batch.groups, batch.problem_ids, batch.response_ids, batch.outcomes, experience.rewards.sum(dim=1).tolist(),
            masked_mean(experience.advantages, experience.mask, dim=1).tolist(), batch.moves)]


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
