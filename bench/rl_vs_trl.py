"""Seconds per RL step: `rftt rl` (GRPO recipe) against TRL's GRPOTrainer, same work; and the phase
breakdown of an RFTT tree-rollout step.

Both train the embedded model on the same chat-templated arithmetic prompts: 4 prompts x 8
samples per step at temperature 1, 96 new tokens, one optimizer step of 32 completions,
KL to a frozen reference with beta 0.01, full fine-tuning at 1e-6, fp32 on this CPU, no
gradient checkpointing on either side (TRL's defaults, bf16 autocast and checkpointing, are
turned off: on this CPU bf16 matmuls in the backward made one TRL step take over 8 minutes). The
first step of each is a warm-up; the figure is the median of the rest, as a ratio.

    python bench/rl_vs_trl.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rftt.config import load_config
from rftt.data import load_problems
from rftt.models import DEFAULT_MODEL, load_model
from rftt.prompts import get_template
from rftt.tokens import add_functional_tokens, save_step_tags
from rftt.train.rl import RLConfig, RLTrainer
from rftt.verify import check_many

from common import peak_memory_mib, write_results

PROMPTS, SAMPLES, NEW_TOKENS, BETA, LEARNING_RATE = 4, 8, 96, 0.01, 1e-6
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def rftt_steps(steps: int, output: Path) -> tuple[list[float], list[float]]:
    """Seconds and mean response tokens of each step of `rftt rl` with the GRPO recipe."""
    config = load_config(RLConfig, RECIPES / "grpo_arithmetic.yaml", [
        f"model={DEFAULT_MODEL}", f"steps={steps}", "dev=null", "rollout.template=chat",
        f"rollout.samples_per_prompt={SAMPLES}", f"rollout.max_new_tokens={NEW_TOKENS}", f"prompts_per_step={PROMPTS}",
        f"mini_batch_size={PROMPTS * SAMPLES}", "micro_batch_size=8", f"kl.coefficient={BETA}",
        f"learning_rate={LEARNING_RATE}", "save_every=0", "eval_every=0", f"output_dir={output}"])
    trainer = RLTrainer(config)
    steps_metrics = [trainer.train_step(step) for step in range(steps)]
    return [metrics["step_seconds"] for metrics in steps_metrics], [metrics["response_length"] for metrics in steps_metrics]


def rftt_tree_step(output: Path) -> dict:
    """One RFTT tree-rollout step: token-guided search with the embedded model, functional tokens added."""
    start = output / "start"
    model, tokenizer = load_model(DEFAULT_MODEL, dtype=torch.float32)
    tokens = add_functional_tokens(model, tokenizer)
    model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    save_step_tags(start, tokens)
    config = load_config(RLConfig, RECIPES / "rftt_arithmetic.yaml", [
        f"model={start}", "steps=1", "dev=null", f"prompts_per_step={PROMPTS}", f"rollout.samples_per_prompt={SAMPLES}",
        "rollout.search.rollouts=8", "rollout.tree.step_max_tokens=48", "mini_batch_size=32", "micro_batch_size=8",
        "save_every=0", "eval_every=0", f"output_dir={output}"])
    return RLTrainer(config).train_step(0)


def trl_steps(steps: int, output: Path) -> tuple[list[float], list[float]]:
    """Seconds and mean completion tokens of each step of TRL's GRPOTrainer on the same prompts."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_model(DEFAULT_MODEL, dtype=torch.float32)
    template = get_template("chat")
    problems = list(load_problems("arithmetic", size=PROMPTS * steps, seed=1))
    dataset = Dataset.from_list([{"prompt": template.render(problem.question, tokenizer), "gold": problem.answer}
                                 for problem in problems])

    def correctness(completions, gold, **_):
        return [float(outcome.correct) for outcome in check_many(completions, gold, last_number_fallback=False)]

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    clock = StepClock()
    arguments = GRPOConfig(
        output_dir=str(output), per_device_train_batch_size=PROMPTS * SAMPLES, num_generations=SAMPLES,
        max_completion_length=NEW_TOKENS, temperature=1.0, beta=BETA, learning_rate=LEARNING_RATE, max_steps=steps,
        num_iterations=1, logging_steps=1, report_to=[], use_cpu=True, shuffle_dataset=False, save_strategy="no",
        gradient_accumulation_steps=1, lr_scheduler_type="constant",
        bf16=False, gradient_checkpointing=False)  # as rftt: fp32 (TRL's default bf16 autocast is slow on CPU)
    trainer = GRPOTrainer(model=model, reward_funcs=correctness, args=arguments, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    lengths = [entry["completions/mean_length"] for entry in trainer.state.log_history
               if "completions/mean_length" in entry]
    return [later - earlier for earlier, later in zip(clock.times, clock.times[1:])], lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ours, our_lengths = rftt_steps(arguments.steps, Path(folder) / "rftt")
        print("rftt rl (grpo) step seconds", ours, "mean response tokens", our_lengths, flush=True)
        theirs, their_lengths = trl_steps(arguments.steps, Path(folder) / "trl")
        print("TRL GRPOTrainer step seconds", theirs, "mean completion tokens", their_lengths, flush=True)
        tree = rftt_tree_step(Path(folder) / "tree")
    ours_median, theirs_median = statistics.median(ours[1:]), statistics.median(theirs[1:])
    figures = {
        "model": DEFAULT_MODEL, "prompts": PROMPTS, "samples_per_prompt": SAMPLES, "new_tokens": NEW_TOKENS,
        "rftt_step_seconds": [round(value, 1) for value in ours], "trl_step_seconds": [round(v, 1) for v in theirs],
        "rftt_mean_response_tokens": [round(value, 1) for value in our_lengths],
        "trl_mean_completion_tokens": [round(value, 1) for value in their_lengths],
        "rftt_median_seconds": round(ours_median, 1), "trl_median_seconds": round(theirs_median, 1),
        "rftt_to_trl_time_ratio": round(ours_median / theirs_median, 3),
        "rftt_tree_step": {"phase_seconds": tree["seconds"], "step_seconds": tree["step_seconds"],
                           "trajectories": PROMPTS * SAMPLES, "mean_response_tokens": tree["response_length"],
                           "moves": tree["moves"]},
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }
    path = write_results("rl_vs_trl", figures)
    print(f"\nseconds per step (median after warm-up): rftt {ours_median:.1f}, TRL {theirs_median:.1f}, "
          f"ratio {figures['rftt_to_trl_time_ratio']}")
    print("RFTT tree-rollout step, seconds per phase:", tree["seconds"])
    print(f"written to {path}")


if __name__ == "__main__":
    main()
