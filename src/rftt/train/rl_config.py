"""The settings of an RL run (`RLConfig`) and the combinations of them that cannot work together."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rftt.data import DatasetSpec
from rftt.models import DEFAULT_MODEL
from rftt.precision import AUTO_DEVICE, DTYPE_NAMES, Precision
from rftt.rewards import RewardConfig
from rftt.run_folder import RunFolder
from rftt.train.rollouts import RolloutConfig
from rftt.train.weights import LoraSettings


@dataclass(frozen=True)
class KLSettings:
    coefficient: float = 0.01
    estimator: Literal["k1", "k2", "k3"] = "k1"
    placement: Literal["reward", "loss"] = "reward"


@dataclass(frozen=True)
class RLConfig:
    """One RL run; `resume: true` continues from the newest checkpoint in `output_dir/checkpoints`.
    `log_rollouts`: write every trajectory a step trains on to `output_dir/rollouts.jsonl` (see `RolloutLog`).
    `prefix_cache_mib`: the rollout engine's KV prefix cache (tree rollouts write every node on top of its
    parent's prefix; the cache is emptied by each optimizer step).
    `precision`: `bf16` runs rollouts and forward passes under bf16 autocast with fp32 weights and optimizer;
    `native` does so where the device computes bf16 natively, `auto` when the checkpoint is stored in bf16
    (`rftt.precision`). `device`: `auto` (the GPU when
    there is one), `cpu`, `cuda` or `cuda:N`; the run's record in `final` names the device it ran on.
    `max_minutes`: stop before a step that, at the mean step time so far, would end more than this many minutes
    after the run (or its resumption) started, and save `final` as after the last step: RL within a wall-clock
    budget (the first step always runs).
    `max_grad_norm`: the policy's gradient and the value head's are each clipped to it, as two models' would be.
    `tree_packing`: the log-prob passes and the update pack each micro-batch's trajectories into one row, every
    token they share computed once (`rftt.train.packing`); used where exact for the model's attention.
    `packed_tokens`: unique tokens per packed micro-batch (unset: `micro_batch_size` times the step's longest
    sequence); a smaller row spends less on its dense attention mask, a larger one shares more."""

    renamed_values: ClassVar[dict[str, dict[str, str]]] = {"precision": DTYPE_NAMES}

    model: str = DEFAULT_MODEL
    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec(name="arithmetic", size=1000, seed=1))
    dev: DatasetSpec | None = None
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: Literal["reinforce_pp", "gae", "grpo", "rloo"] = "reinforce_pp"
    gamma: float = 1.0
    lam: float = 0.95
    kl: KLSettings = field(default_factory=KLSettings)
    clip: float = 0.2
    loss_aggregation: Literal["token_mean", "sequence_mean"] = "token_mean"
    critic: Literal["none", "shared"] = "none"
    value_loss_weight: float = 5.0
    value_clip: float = 0.2
    entropy_weight: float = 0.0
    ppo_epochs: int = 1
    prompts_per_step: int = 4
    mini_batch_size: int = 16
    micro_batch_size: int = 8
    learning_rate: float = 1e-6
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    precision: Precision = "auto"
    device: str = AUTO_DEVICE
    steps: int = 20
    max_minutes: float | None = None
    lora: LoraSettings | None = None
    seed: int = 0
    prefix_cache_mib: int = 0
    tree_packing: bool = True
    packed_tokens: int | None = None
    eval_every: int = 0
    eval_max_new_tokens: int = 256
    log_rollouts: bool = True
    save_every: int = 10
    keep_checkpoints: int = 2
    output_dir: str = "runs/rl"
    resume: bool = False


TREE_ROLLOUT_SETTINGS = ("tree", "search")


def rl_settings_in_use(settings: dict[str, Any]) -> dict[str, Any]:
    """An RL run's settings without those its rollouts do not read (tree search's, unless `rollout.kind: tree`),
    so that runs are compared by what decides their training."""
    rollout = settings.get("rollout", {})
    if rollout.get("kind") == "tree":
        return settings
    return {**settings, "rollout": {key: value for key, value in rollout.items() if key not in TREE_ROLLOUT_SETTINGS}}


RL_RUN_FOLDER = RunFolder("config.json", ("model", "dataset.path", "dev.path", "output_dir"), frozenset({
    "steps", "resume", "max_minutes", "eval_every", "save_every", "keep_checkpoints", "log_rollouts", "device",
    "prefix_cache_mib", "output_dir"}), rl_settings_in_use)
"""An RL run continues with more steps, another time budget, evaluation or checkpoint schedule, or device, and
with other tree-search settings when its rollouts sample."""


def check_settings(config: RLConfig) -> None:
    """Settings that cannot work together, named before anything is loaded."""
    from rftt.config import ConfigError

    if config.advantage == "gae" and config.critic == "none":
        raise ConfigError("config.advantage: gae needs a critic (set critic: shared)")
    if config.advantage in ("grpo", "rloo") and config.rollout.samples_per_prompt < 2:
        raise ConfigError(f"config.rollout.samples_per_prompt: {config.advantage} needs at least 2 samples per prompt")
    if config.rollout.kind == "tree":
        config.rollout.answer_check.check_for_tree_search("config.rollout.answer_check")
    if config.rollout.oversample < 1:
        raise ConfigError("config.rollout.oversample: must be at least 1")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise ConfigError("config.max_minutes: must be positive (or unset for no time budget)")
    if config.micro_batch_size > config.mini_batch_size:
        raise ConfigError("config.micro_batch_size: must not exceed mini_batch_size")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if config.prompts_per_step % processes:
        raise ConfigError(f"config.prompts_per_step: {config.prompts_per_step} prompts cannot be shared by {processes} "
                          "processes")
