"""The reference TRL glue on the reference demo task: the baseline rftt's RL is compared with.

Exactly the recipe of ../shared/DESIGN.md ("Facts for the demo task"), assembled from transformers and TRL
as a user would: sample 4 completions at T=0.8 (128 new tokens) for the first 200 training problems with
`model.generate`; keep those whose box (or, without a box, last number) is right, appending ` \\boxed{gold}`
where there is no box, at most 2 distinct per problem; fully fine-tune 2 epochs (AdamW 2e-5 constant, batch 8,
loss on completion + EOS); then TRL's GRPOTrainer (32 completions a step: 4 prompts x 8, 96 new tokens, T=1.0,
lr 5e-6 constant, beta 0, TRL's default loss) on training items 200-1999 until `--grpo-minutes` have passed.
Every model is scored greedily and strictly on the 200 held-out problems (bench/reference_task.py).

    python bench/demo_vs_trl.py --seed 0                     # fp32, 20 minutes of GRPO, the arithmetic preset
    python bench/demo_vs_trl.py --seed 1 --precision bf16    # bf16 autocast for sampling, SFT and GRPO

Its reference figures (fp32, 2 cores): warm-up 17.5% (102 samples kept over 65 problems), after 20 minutes of
GRPO 34.5% (seed 0) and 24.5% (seed 1), after 10 minutes 26.5% (seed 1). Each run's figures go to
bench/results/demo_vs_trl.json (merged by label); its models and per-problem records to --runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from reference_task import (
    boxed_correct,
    generate,
    held_out_accuracy,
    kept_warm_up_response,
    paired_change,
    reference_splits,
    render_prompts,
)

from rftt.models import load_model
from rftt.precision import autocast, uses_bf16
from rftt.prompts import STEPS_INSTRUCTION

from common import RESULTS, cpu_flags, peak_memory_mib, write_results

SAMPLING_PROBLEMS, SAMPLES, SAMPLE_TEMPERATURE, SAMPLE_TOKENS, SAMPLE_BATCH, KEPT_PER_PROBLEM = 200, 4, 0.8, 128, 16, 2
SFT_EPOCHS, SFT_LEARNING_RATE, SFT_BATCH, SFT_CLIP = 2, 2e-5, 8, 1.0
GRPO_PROMPTS, GRPO_SAMPLES, GRPO_TOKENS, GRPO_LEARNING_RATE = 4, 8, 96, 5e-6


def warm_up_samples(model, tokenizer, problems, precision: str) -> list[dict[str, str]]:
    """Rejection sampling: the kept (question, prompt, response) records, at most 2 distinct per problem."""
    prompts = render_prompts(tokenizer, problems)
    texts = generate(model, tokenizer, prompts, max_new_tokens=SAMPLE_TOKENS, batch_size=SAMPLE_BATCH,
                     precision=precision, samples=SAMPLES, temperature=SAMPLE_TEMPERATURE)
    kept: list[dict[str, str]] = []
    for index, (problem, prompt) in enumerate(zip(problems, prompts)):
        responses: list[str] = []
        for text in texts[index * SAMPLES : (index + 1) * SAMPLES]:
            response = kept_warm_up_response(text, problem.answer)
            if response is not None and response not in responses and len(responses) < KEPT_PER_PROBLEM:
                responses.append(response)
        kept += [{"id": problem.id, "question": problem.question, "prompt": prompt, "response": response}
                 for response in responses]
    return kept


def supervised_fine_tune(model, tokenizer, samples: list[dict[str, str]], seed: int, precision: str) -> int:
    """A plain loop: loss on the response and EOS only, AdamW at a constant rate, gradients clipped; returns the
    optimizer steps taken."""
    generator = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFT_LEARNING_RATE, weight_decay=0.0)
    steps = 0
    model.train()
    for _ in range(SFT_EPOCHS):
        order = list(samples)
        generator.shuffle(order)
        for start in range(0, len(order), SFT_BATCH):
            rows = []
            for sample in order[start : start + SFT_BATCH]:
                prompt_ids = tokenizer.encode(sample["prompt"], add_special_tokens=False)
                answer_ids = tokenizer.encode(sample["response"], add_special_tokens=False) + [tokenizer.eos_token_id]
                rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
            labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
            with autocast(precision, torch.device("cpu")):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), SFT_CLIP)
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
    model.eval()
    return steps


def grpo_until(model, tokenizer, problems, minutes: float, snapshot_minutes: list[float], output: Path, seed: int,
               precision: str) -> dict[str, Any]:
    """TRL's GRPOTrainer until `minutes` have passed (checked after each step); the weights at each of
    `snapshot_minutes` are kept in memory for scoring afterwards."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def correctness(completions, gold, **_):
        return [float(boxed_correct(completion[-1]["content"], answer)) for completion, answer in zip(completions, gold)]

    class WallBudget(TrainerCallback):
        def __init__(self):
            self.started, self.steps, self.snapshots = 0.0, 0, {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps, elapsed = state.global_step, time.perf_counter() - self.started
            for mark in snapshot_minutes:
                if elapsed >= mark * 60 and mark not in self.snapshots:
                    self.snapshots[mark] = {"steps": state.global_step, "seconds": round(elapsed, 1),
                                            "weights": copy.deepcopy(model.state_dict())}
            control.should_training_stop = elapsed >= minutes * 60

    budget = WallBudget()
    arguments = GRPOConfig(
        output_dir=str(output), use_cpu=True, bf16=uses_bf16(precision, "cpu"), per_device_train_batch_size=32,
        num_generations=GRPO_SAMPLES, max_completion_length=GRPO_TOKENS, temperature=1.0,
        learning_rate=GRPO_LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0, beta=0.0,
        gradient_checkpointing=False, seed=seed, max_steps=100_000, logging_steps=1, report_to=[],
        save_strategy="no")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{problem.question}\n{STEPS_INSTRUCTION}"}],
                                  "gold": problem.answer} for problem in problems])
    trainer = GRPOTrainer(model=model, reward_funcs=correctness, args=arguments, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[budget])
    started = time.perf_counter()
    trainer.train()
    history = [{key: entry[key] for key in ("step", "reward", "reward_std", "completions/mean_length")
                if key in entry} for entry in trainer.state.log_history if "reward" in entry]
    return {"steps": budget.steps, "seconds": round(time.perf_counter() - started, 1), "history": history,
            "snapshots": budget.snapshots}


def run_glue(task: str, seed: int, precision: str, minutes: float, snapshot_minutes: list[float],
             folder: Path) -> dict[str, Any]:
    """The whole glue: rejection sampling, SFT, GRPO; held-out accuracy after each stage."""
    torch.manual_seed(seed)
    train, held_out = reference_splits(task)
    model, tokenizer = load_model("smollm2-135m-instruct", dtype=torch.float32)
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {"pipeline": "trl glue", "task": task, "seed": seed, "precision": precision,
                              "grpo_minutes": minutes}
    result["base"] = held_out_accuracy(model, tokenizer, held_out, folder / "eval-base.jsonl", precision)
    mark = time.perf_counter()
    samples = warm_up_samples(model, tokenizer, train[:SAMPLING_PROBLEMS], precision)
    seconds["rejection_sampling"] = time.perf_counter() - mark
    (folder / "warm-up-samples.jsonl").write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    result["kept_samples"] = len(samples)
    result["kept_problems"] = len({sample["id"] for sample in samples})
    mark = time.perf_counter()
    result["sft_steps"] = supervised_fine_tune(model, tokenizer, samples, seed, precision)
    seconds["sft"] = time.perf_counter() - mark
    model.save_pretrained(folder / "sft")  # the warm-up, so RL of another framework can start from it
    tokenizer.save_pretrained(folder / "sft")
    result["after_sft"] = held_out_accuracy(model, tokenizer, held_out, folder / "eval-sft.jsonl", precision)
    print(f"after SFT: {result['after_sft']['accuracy']:.1%} ({result['kept_samples']} samples kept)", flush=True)
    grpo = grpo_until(model, tokenizer, train[SAMPLING_PROBLEMS:], minutes, snapshot_minutes, folder / "grpo",
                      seed, precision)
    seconds["grpo"] = grpo["seconds"]
    result["after_rl"] = held_out_accuracy(model, tokenizer, held_out, folder / "eval-grpo.jsonl", precision)
    result["rl_minus_sft"] = paired_change(folder / "eval-sft.jsonl", folder / "eval-grpo.jsonl")
    final_weights = copy.deepcopy(model.state_dict())
    result["snapshots"] = {}
    for mark_minutes, snapshot in grpo.pop("snapshots").items():
        model.load_state_dict(snapshot["weights"])
        result["snapshots"][f"{mark_minutes:g}min"] = {
            "steps": snapshot["steps"], "seconds": snapshot["seconds"],
            "accuracy": held_out_accuracy(model, tokenizer, held_out, folder / f"eval-grpo-{mark_minutes:g}min.jsonl",
                                          precision)}
    model.load_state_dict(final_weights)
    model.save_pretrained(folder / "grpo-final")
    tokenizer.save_pretrained(folder / "grpo-final")
    result["rl_steps"], result["grpo"] = grpo["steps"], grpo
    result["stage_seconds"] = {name: round(value, 1) for name, value in seconds.items()}
    result["pipeline_seconds"] = round(sum(seconds.values()), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="arithmetic", help="a task preset (arithmetic is the reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--grpo-minutes", type=float, default=20.0)
    parser.add_argument("--snapshot-minutes", type=float, nargs="*", default=[10.0],
                        help="also score the GRPO weights at these minutes")
    parser.add_argument("--runs", default="runs/bench-glue")
    arguments = parser.parse_args()
    label = f"{arguments.task}-{arguments.precision}-seed{arguments.seed}"
    folder = Path(arguments.runs) / label
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    glue = run_glue(arguments.task, arguments.seed, arguments.precision, arguments.grpo_minutes,
                    arguments.snapshot_minutes, folder)
    glue["wall_seconds_with_evaluations"] = round(time.perf_counter() - started, 1)
    glue["peak_memory_mib"] = round(peak_memory_mib(), 1)
    path = RESULTS / "demo_vs_trl.json"
    runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    runs[label] = {**glue, "cpu_flags": cpu_flags()}
    write_results("demo_vs_trl", {"runs": runs})
    print(f"\n{label}: base {glue['base']['accuracy']:.1%}, after SFT {glue['after_sft']['accuracy']:.1%} "
          f"({glue['kept_samples']} samples over {glue['kept_problems']} problems), after {glue['rl_steps']} "
          f"GRPO steps in {glue['grpo']['seconds']:.0f} s {glue['after_rl']['accuracy']:.1%}; stages "
          f"{glue['stage_seconds']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
