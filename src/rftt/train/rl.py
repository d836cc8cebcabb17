"""`rftt rl`: one online RL loop for RFTT and ReFT.

Each step, phase by phase: rollout (sampling or tree search) -> reward (verify, process
rewards) -> log-probs (old policy, reference, critic) -> advantages (KL in the reward,
then the chosen estimator) -> update (PPO epochs over mini-batches) -> metrics ->
checkpoint. The hf engine generates with the very model being trained, so no weights need
syncing between update and rollout. RFTT and ReFT differ only in configuration (see
recipes/rftt_*.yaml, reft_*.yaml, grpo_*.yaml).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ContextManager, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from transformers import get_scheduler

from rftt.algos import POLICY_LOSSES, clipped_value_loss, compute_advantages, masked_mean
from rftt.config import configured_device, configured_training_precision, to_dict
from rftt.data import Problem, load_problems
from rftt.engine.hf import HFEngine
from rftt.models import load_model, recorded_step_tags
from rftt.precision import autocast, select_device
from rftt.rewards import outcome_reward
from rftt.run_folder import claim_run_folder
from rftt.tokens import FunctionalTokenError, FunctionalTokens, StepTags
from rftt.train import CHECKPOINT_FOLDER, FINAL_FOLDER, check_resumable
from rftt.train.experience import Experience, UpdateResult
from rftt.train.metrics_log import MetricsLog, RolloutLog, step_metrics, trajectory_records
from rftt.train.packing import TrainingForward
from rftt.train.rl_config import RL_RUN_FOLDER, RLConfig, check_settings
from rftt.train.rl_model import (
    ReferenceModel,
    ResponseForward,
    SequenceBatch,
    ValueHead,
    build_sequences,
    forward_in_chunks,
    hidden_size,
    micro_batch_share,
)
from rftt.train.rl_state import (
    CheckpointFolder,
    TrainingState,
    checkpoint_metrics,
    checkpoints,
    load_training_state,
    save_checkpoint,
    save_model_folder,
)
from rftt.train.rl_steps import PhaseTimer, problems_for_step, step_fits_budget, step_seed
from rftt.train.rollouts import (
    RolloutModel,
    TrajectoryBatch,
    greedy_accuracy,
    keep_informative_groups,
    sampling_rollouts,
    tree_rollouts,
)
from rftt.train.weights import apply_lora, write_fingerprint


class RLTrainer:
    """Holds the models, optimizer and data of a run; `fit()` is the loop."""

    def __init__(self, config: RLConfig):
        self.config = config
        self.output = Path(config.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        check_settings(config)
        device = configured_device("config.device", config.device)
        precision = configured_training_precision("config.precision", config.precision, config.model)
        self.config = config = replace(config, device=str(device), precision=precision)
        select_device(device)
        torch.manual_seed(config.seed)
        AcceleratorState._reset_state(reset_partial_state=True)  # a stage run before in this process set it up
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        if self.accelerator.device.type != device.type:
            raise RuntimeError(f"config.device: {config.device} asked for, accelerate chose {self.accelerator.device}")
        if self.accelerator.is_main_process:
            claim_run_folder(self.output, RLConfig, to_dict(config), RL_RUN_FOLDER)
        model, self.tokenizer = load_model(config.model, dtype=torch.float32)
        self.tokens = self._step_tags()
        self.policy = apply_lora(model, config.lora, []) if config.lora else model
        self.reference = ReferenceModel(self.policy, uses_lora=config.lora is not None) if config.kl.coefficient \
            else None  # without a KL term nothing reads the reference model: no copy, no forward pass
        self.value_head = ValueHead(hidden_size(model)) if config.critic == "shared" else None
        # clipped apart, as two models would be: the value head's gradient (value loss weight 5 on raw hidden
        # states) can be 9 times the policy's (15.4 against 1.75 in ReFT's first step on arithmetic), and one
        # clip of both shrank the policy's step as much
        self.clipped_groups = {"grad_norm": [parameter for parameter in self.policy.parameters()
                                             if parameter.requires_grad]}
        if self.value_head is not None:
            self.clipped_groups["value_grad_norm"] = list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW([parameter for group in self.clipped_groups.values() for parameter in group],
                                           lr=config.learning_rate, betas=config.adam_betas,
                                           weight_decay=config.weight_decay)
        self.trained_policy, self.optimizer = self.accelerator.prepare(self.policy, self.optimizer)
        self.trained_value_head = self.accelerator.prepare(self.value_head) if self.value_head is not None else None
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        local_samples = config.prompts_per_step // self.accelerator.num_processes * config.rollout.samples_per_prompt
        updates = config.steps * config.ppo_epochs * math.ceil(local_samples / config.mini_batch_size)
        self.scheduler = get_scheduler(config.scheduler, self.optimizer, int(config.warmup_ratio * updates), updates)
        self.forward = TrainingForward.for_model(self.policy, config.micro_batch_size, config.tree_packing,
                                               config.packed_tokens)
        self.engine = HFEngine(self.policy, self.tokenizer, prefix_cache_mib=config.prefix_cache_mib)
        self.problems = list(load_problems(config.dataset))
        self.dev_problems = list(load_problems(config.dev)) if config.dev else []
        self.start_step, saved_metrics = 0, None
        saved = checkpoints(self.output / CHECKPOINT_FOLDER) if config.resume else []
        if config.resume:
            check_resumable(self.output, bool(saved))
        if saved:
            latest = self.output / CHECKPOINT_FOLDER / f"step-{saved[-1]}"
            self.start_step = load_training_state(latest, self.training_state()) + 1
            saved_metrics = checkpoint_metrics(latest)
        main = self.accelerator.is_main_process
        self.log = MetricsLog(self.output, self.start_step, saved_metrics) if main else None
        self.rollout_log = RolloutLog(self.output, self.start_step) if main and config.log_rollouts else None

    def autocast(self) -> ContextManager:
        """Where forward passes run: bf16 autocast when `precision` resolves to bf16 (weights stay fp32)."""
        return autocast(self.config.precision, self.accelerator.device)

    def _step_tags(self) -> StepTags | None:
        """The warm-up checkpoint's step tags (functional tokens, or text tags for the ablation)."""
        recorded = recorded_step_tags(self.config.model, self.tokenizer)
        if recorded is not None:
            return recorded
        try:
            return FunctionalTokens.from_tokenizer(self.tokenizer)
        except FunctionalTokenError:
            if self.config.rollout.kind == "tree":
                raise
            return None

    @property
    def ranks(self) -> tuple[int, int]:
        return self.accelerator.process_index, self.accelerator.num_processes

    def local_problems(self, step: int) -> list[Problem]:
        """This process's share of the step's prompts."""
        rank, world = self.ranks
        problems = problems_for_step(self.problems, step, self.config.prompts_per_step * self.config.rollout.oversample,
                                     self.config.seed)
        share = len(problems) // world
        return problems[rank * share : (rank + 1) * share]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The same per-token tensor from every process, stacked (left-padded to the widest)."""
        if self.ranks[1] == 1:
            return tensor
        padded = self.accelerator.pad_across_processes(tensor, dim=1, pad_index=0, pad_first=True)
        return self.accelerator.gather(padded)

    def local_rows(self, tensor: torch.Tensor, rows: int, width: int) -> torch.Tensor:
        rank = self.ranks[0]
        return tensor[rank * rows : (rank + 1) * rows, -width:]

    def rollout(self, problems: Sequence[Problem], step: int) -> TrajectoryBatch:
        self.policy.eval()
        seed = step_seed(self.config.seed, step)
        with self.autocast():
            model = RolloutModel(self.engine, self.tokenizer, self.tokens)
            if self.config.rollout.kind == "tree":
                batch = tree_rollouts(model, problems, self.config.rollout, seed)
            else:
                batch = sampling_rollouts(model, problems, self.config.rollout, seed)
        batch.outcome_rewards = [outcome_reward(outcome, self.config.reward) for outcome in batch.outcomes]
        return keep_informative_groups(batch, batch.outcome_rewards, self.config.prompts_per_step // self.ranks[1])

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining steps; returns the metrics of each."""
        history = []
        started = time.perf_counter()
        if self.start_step == 0 and self.config.eval_every and self.dev_problems:
            self.evaluate_before_training()
        for step in range(self.start_step, self.config.steps):
            history.append(self.train_step(step))
            if self.out_of_time(time.perf_counter() - started, len(history)):
                break
        write_fingerprint(self.policy, self.output, self.ranks[0])
        if self.accelerator.is_main_process:
            save_model_folder(self.output / FINAL_FOLDER, self.training_state(), self._record())
        if self.log is not None:
            self.log.close()
        return history

    def out_of_time(self, elapsed: float, steps: int) -> bool:
        """Whether another step would end past `max_minutes` (`step_fits_budget`); processes stop together, as soon
        as any one's clock says so."""
        if self.config.max_minutes is None:
            return False
        over = torch.tensor([float(not step_fits_budget(elapsed, steps, self.config.max_minutes * 60))])
        if self.ranks[1] > 1:
            over = self.accelerator.reduce(over.to(self.accelerator.device), reduction="max").cpu()
        return bool(over.item())

    def evaluate_before_training(self) -> None:
        """The dev accuracy of the starting model, logged as step -1, so a curve starts from where RL began."""
        started = time.perf_counter()
        metrics: dict[str, Any] = {"step": -1, "dev_accuracy": self.evaluate(self.dev_problems)}
        metrics["seconds"] = {"evaluation": round(time.perf_counter() - started, 3)}
        if self.log is not None:
            self.log.write(metrics)

    def training_state(self) -> TrainingState:
        """The live objects a checkpoint saves and a resumed run restores."""
        return TrainingState(self.policy, self.tokenizer, self.tokens, self.value_head, self.optimizer, self.scheduler)

    def _record(self) -> dict[str, Any]:
        return {"stage": "rl", "base_model": self.config.model, "config": to_dict(self.config)}

    def train_step(self, step: int) -> dict[str, Any]:
        config, timer = self.config, PhaseTimer()
        experience = self.make_experience(self.local_problems(step), step, timer)
        with timer.phase("update"):
            update = self.update(experience, step)
        if experience.old_is_current and experience.reference_logprobs is not None:
            experience.kl = self._kl(update.old_logprobs, experience.reference_logprobs) * experience.mask
        metrics = {**step_metrics(step, experience.batch, experience.rewards, experience.kl, experience.mask),
                   "learning_rate": self.scheduler.get_last_lr()[0], **update.metrics}
        if self.config.log_rollouts:
            self.log_rollouts(step, experience)
        if config.eval_every and self.dev_problems and (step + 1) % config.eval_every == 0:
            with timer.phase("evaluation"):
                metrics["dev_accuracy"] = self.evaluate(self.dev_problems)
        saving = config.save_every and ((step + 1) % config.save_every == 0 or step + 1 == config.steps)
        if saving and self.accelerator.is_main_process:
            with timer.phase("checkpoint"):
                save_checkpoint(CheckpointFolder(self.output / CHECKPOINT_FOLDER, config.keep_checkpoints), step,
                                self.training_state(), self._record(), metrics=timer.stamped(metrics))
        metrics = timer.stamped(metrics)
        if self.log is not None:
            self.log.write(metrics)
        return metrics

    def make_experience(self, problems: Sequence[Problem], step: int, timer: PhaseTimer) -> Experience:
        """Rollout -> reward -> log-probs -> KL -> advantages, each phase timed: the step's `Experience`."""
        with timer.phase("rollout"):
            batch = self.rollout(problems, step)
        return self.experience_of(batch, timer)

    def experience_of(self, batch: TrajectoryBatch, timer: PhaseTimer) -> Experience:
        """A rolled-out batch's rewards, old and reference log-probs, KL and advantages."""
        config = self.config
        with timer.phase("reward"):
            sequences = build_sequences(batch.prompt_ids, batch.response_ids, self.tokenizer.pad_token_id)
            rewards = batch.token_rewards(sequences.width, config.reward) * sequences.response_mask
        old_is_current = self.old_policy_is_current(len(batch))
        with timer.phase("logprobs"), self.autocast():
            old = (ResponseForward(torch.zeros(sequences.response_mask.shape), None, None) if old_is_current
                   else self.forward_without_gradients(self.policy, sequences, self.value_head))
            reference_logprobs = self.reference_logprobs(sequences)
        with timer.phase("advantages"):
            kl = None if old_is_current or reference_logprobs is None \
                else self._kl(old.logprobs, reference_logprobs) * sequences.response_mask
            shaped = rewards - config.kl.coefficient * kl if config.kl.placement == "reward" and kl is not None \
                else rewards
            advantages, returns = self.advantages(shaped, sequences.response_mask, old.values, batch.groups)
        return Experience(batch, sequences, rewards, old, reference_logprobs, advantages, returns, old_is_current, kl)

    def log_rollouts(self, step: int, experience: Experience) -> None:
        """Each trained trajectory of the step, all processes' (`trajectory_records`), to rollouts.jsonl."""
        records = trajectory_records(step, experience, self.tokenizer,
                                     group_offset=self.ranks[0] * self.config.prompts_per_step)
        if self.ranks[1] > 1:
            records = gather_object(records)
        if self.rollout_log is not None:
            self.rollout_log.write(records)

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None,
                   groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages over the whole step's batch (all processes), returned for this process's rows."""
        rank, world = self.ranks
        rows, width = mask.shape
        group_ids = torch.tensor(groups) + rank * self.config.prompts_per_step
        everything = [self.gather_rows(tensor) for tensor in (rewards, mask, values if values is not None else mask)]
        all_groups = self.accelerator.gather(group_ids) if world > 1 else group_ids
        advantages, returns = compute_advantages(
            self.config.advantage, everything[0], everything[1], gamma=self.config.gamma, lam=self.config.lam,
            values=everything[2] if values is not None else None, group_ids=all_groups)
        return self.local_rows(advantages, rows, width), self.local_rows(returns, rows, width)

    def reference_logprobs(self, sequences) -> torch.Tensor | None:
        """The reference model's log-probs of the responses, or None for a run without a KL term."""
        if self.reference is None:
            return None
        with self.reference.active() as reference:
            return self.forward_without_gradients(reference, sequences).logprobs

    def forward_without_gradients(self, model: torch.nn.Module, sequences: SequenceBatch,
                                  value_head: torch.nn.Module | None = None) -> ResponseForward:
        """The old policy's or the reference's log-probs (and values) of the whole batch, micro-batch by micro-batch."""
        chunks = self.forward.micro_batches(sequences, torch.arange(sequences.input_ids.shape[0]))
        return forward_in_chunks(model, sequences, chunks, value_head, forward=self.forward)

    def _kl(self, logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
        from rftt.algos import KL_ESTIMATORS

        return KL_ESTIMATORS[self.config.kl.estimator](logprobs, reference_logprobs)

    def old_policy_is_current(self, rows: int) -> bool:
        """Whether one update on the whole batch follows the rollout, with nothing but the ratio needing the old
        log-probs: then they are the update's own, detached (as TRL does), and their forward pass is skipped."""
        config = self.config
        return (config.ppo_epochs == 1 and rows <= config.mini_batch_size and self.value_head is None
                and (config.kl.placement != "reward" or self.reference is None))

    def update(self, experience: Experience, step: int) -> UpdateResult:
        """PPO epochs over shuffled mini-batches, each accumulated over micro-batches of similar length; when the old
        log-probs are the current policy's (`old_is_current`), they are read off the update's own forward passes."""
        config, sequences = self.config, experience.sequences
        self.policy.train()
        generator = torch.Generator().manual_seed(step_seed(config.seed, step))
        totals: dict[str, list[float]] = {}
        own_logprobs = torch.zeros(experience.mask.shape) if experience.old_is_current else None
        samples = sequences.input_ids.shape[0]
        for _ in range(config.ppo_epochs):
            order = torch.randperm(samples, generator=generator)
            for start in range(0, samples, config.mini_batch_size):
                mini = order[start : start + config.mini_batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                for rows in self.forward.micro_batches(sequences, mini):
                    loss, stats = self._loss(experience, rows, own_logprobs)
                    self.accelerator.backward(loss * micro_batch_share(sequences.response_mask, rows, mini,
                                                                       config.loss_aggregation))
                    for key, value in stats.items():
                        totals.setdefault(key, []).append(value)
                for name, norm in self.clip_gradients().items():
                    totals.setdefault(name, []).append(norm)
                self.optimizer.step()
                self.scheduler.step()
        return UpdateResult({key: sum(values) / len(values) for key, values in totals.items()}, own_logprobs)

    def clip_gradients(self) -> dict[str, float]:
        """Clip the policy's and the value head's gradients to `max_grad_norm` each; their norms before clipping."""
        return {name: float(self.accelerator.clip_grad_norm_(parameters, self.config.max_grad_norm))
                for name, parameters in self.clipped_groups.items()}

    def _loss(self, experience: Experience, rows: torch.Tensor,
              own_logprobs: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """One micro-batch's loss (policy, entropy bonus, KL in the loss, critic) and its statistics; with
        `own_logprobs`, the old log-probs are these rows' current ones, detached, and are kept there."""
        config = self.config
        rows_batch = experience.sequences.rows(rows)
        width = rows_batch.width  # these rows' responses: the last `width` columns
        with self.autocast():
            current = self.forward(self.trained_policy, rows_batch, self.trained_value_head,
                                   entropy="trained" if config.entropy_weight else "logged")
        device = current.logprobs.device

        def these(tensor: torch.Tensor) -> torch.Tensor:
            """These rows' part of a whole-batch per-token tensor, on the model's device."""
            return tensor[rows, -width:].to(device)

        mask = rows_batch.response_mask.to(device)
        if own_logprobs is not None:
            own_logprobs[rows, -width:] = current.logprobs.detach().to(own_logprobs.device)
        old_logprobs = these(own_logprobs if own_logprobs is not None else experience.old.logprobs)
        loss, stats = POLICY_LOSSES["ppo_clip"](current.logprobs, old_logprobs, these(experience.advantages), mask,
                                                clip=config.clip, aggregation=config.loss_aggregation)
        stats = {**stats, "policy_loss": float(loss.detach()), "entropy": float(current.entropy.detach())}
        if config.entropy_weight:
            loss = loss - config.entropy_weight * current.entropy
        if config.kl.placement == "loss" and self.reference is not None:
            kl_term = masked_mean(self._kl(current.logprobs, these(experience.reference_logprobs)), mask)
            loss = loss + config.kl.coefficient * kl_term
        if self.value_head is not None and current.values is not None:
            value_loss, value_stats = clipped_value_loss(current.values, these(experience.old.values),
                                                         these(experience.returns), mask, clip=config.value_clip)
            loss = loss + config.value_loss_weight * value_loss
            stats.update(value_stats, value_loss=float(value_loss.detach()))
        return loss, stats

    def evaluate(self, problems: Sequence[Problem]) -> float:
        """Greedy accuracy on held-out problems with the rollout prompt template."""
        self.policy.eval()
        with self.autocast():
            return greedy_accuracy(self.engine, self.tokenizer, problems, self.config.rollout,
                                   self.config.eval_max_new_tokens)


def run_rl(config: RLConfig) -> list[dict[str, Any]]:
    """Train (or resume) and return the metrics of the steps run."""
    return RLTrainer(config).fit()
