"""`rftt demo` against a TRL-glue pipeline on the same splits, prompts and verifier.

The glue is what a user can assemble from TRL and transformers (../shared/DESIGN.md, "Facts
for the demo task"): sample 4 completions at T=0.8 for 200 training problems with
`model.generate`, keep those whose last number is right (appending `\\boxed{gold}` where the
answer is not boxed), fully fine-tune 2 epochs at 2e-5, then TRL's GRPOTrainer (4 prompts x 8
samples, 96 new tokens, lr 5e-6, reward 1 for a correct `\\boxed{}` answer) until the wall
budget is spent. Both pipelines are scored by `rftt eval` (greedy, strict: only stated answers
count) on the demo's held-out problems, with the demo's chat prompt.

    python bench/demo_vs_trl.py                       # rftt demo, then the glue at the demo's wall time
    python bench/demo_vs_trl.py --glue-minutes 56 --skip-demo --label glue-56min   # the long glue run

Each run's stages and held-out accuracy go to bench/results/demo_vs_trl.json (merged by label).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rftt.data import DatasetSpec, load_problems
from rftt.demo import demo_config, plan_stages, run_demo
from rftt.evaluate import evaluate
from rftt.models import load_model
from rftt.prompts import get_template
from rftt.verify import check_many

from common import RESULTS, peak_memory_mib, write_results

SAMPLES, SAMPLE_TEMPERATURE, SAMPLE_TOKENS, SAMPLING_PROBLEMS = 4, 0.8, 96, 200
SFT_EPOCHS, SFT_LEARNING_RATE, SFT_BATCH = 2, 2e-5, 8
GRPO_PROMPTS, GRPO_SAMPLES, GRPO_TOKENS, GRPO_LEARNING_RATE = 4, 8, 96, 5e-6


def rejection_samples(model, tokenizer, prompts: list[str], golds: list[str], seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) pairs whose last number is right, with `\\boxed{gold}` appended where missing."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    kept = []
    for start in range(0, len(prompts), 16):
        batch = tokenizer(prompts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**batch, do_sample=True, temperature=SAMPLE_TEMPERATURE, max_new_tokens=SAMPLE_TOKENS,
                                    num_return_sequences=SAMPLES, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        owners = [start + index // SAMPLES for index in range(len(texts))]
        outcomes = check_many(texts, [golds[owner] for owner in owners])
        strict = check_many(texts, [golds[owner] for owner in owners], last_number_fallback=False)
        for text, owner, loose, boxed in zip(texts, owners, outcomes, strict):
            if loose.correct:
                kept.append((prompts[owner], text if boxed.correct else f"{text.rstrip()} \\boxed{{{golds[owner]}}}"))
    return kept


def supervised_fine_tune(model, tokenizer, pairs: list[tuple[str, str]], seed: int) -> None:
    """A plain loop: response-only loss, AdamW, linear decay, 2 epochs."""
    generator = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFT_LEARNING_RATE)
    steps = max(1, SFT_EPOCHS * -(-len(pairs) // SFT_BATCH))  # no kept samples: no step, and no division by zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(SFT_EPOCHS):
        order = list(pairs)
        generator.shuffle(order)
        for start in range(0, len(order), SFT_BATCH):
            rows = []
            for prompt, completion in order[start : start + SFT_BATCH]:
                prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
                answer_ids = tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
                rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
            labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
            model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    model.eval()


def grpo_until(model, tokenizer, prompts: list[str], golds: list[str], seconds: float, output: Path, seed: int) -> int:
    """TRL GRPOTrainer on the training prompts until `seconds` have passed; returns the steps taken."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def correctness(completions, gold, **_):
        return [float(outcome.correct) for outcome in check_many(completions, gold, last_number_fallback=False)]

    class WallBudget(TrainerCallback):
        def __init__(self):
            self.started, self.steps = time.perf_counter(), 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps = state.global_step
            control.should_training_stop = time.perf_counter() - self.started > seconds

    budget = WallBudget()
    arguments = GRPOConfig(
        output_dir=str(output), per_device_train_batch_size=GRPO_PROMPTS * GRPO_SAMPLES, num_generations=GRPO_SAMPLES,
        max_completion_length=GRPO_TOKENS, temperature=1.0, learning_rate=GRPO_LEARNING_RATE, max_steps=10_000,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=seed, lr_scheduler_type="constant",
        bf16=False, gradient_checkpointing=False)  # TRL's defaults (bf16 autocast, checkpointing) took 915 s a step here
    dataset = Dataset.from_list([{"prompt": prompt, "gold": gold} for prompt, gold in zip(prompts, golds)])
    trainer = GRPOTrainer(model=model, reward_funcs=correctness, args=arguments, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[budget])
    if seconds > 0:
        trainer.train()
    return budget.steps


def held_out_accuracy(config, model_folder: str, output: str) -> dict[str, Any]:
    """The demo's own baseline evaluation (held-out problems, chat prompt, strict), on another model."""
    stage = plan_stages(config).baseline
    summary = evaluate(replace(stage, model=model_folder, output_dir=output))
    return {key: summary[key] for key in ("accuracy", "accuracy_95_interval", "extraction_rate",
                                          "accuracy_among_extracted", "problems")}


def trl_glue(config, minutes: float, folder: Path) -> dict[str, Any]:
    """The glue pipeline on the demo's training and held-out problems, within `minutes` of wall time."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    model, tokenizer = load_model(config.model, dtype=torch.float32)
    template = get_template(config.evaluation.template)
    train = list(load_problems(DatasetSpec(name="json", path=str(Path(config.output_dir) / "problems" / "train.jsonl"))))
    prompts = [template.render(problem.question, tokenizer) for problem in train]
    golds = [problem.answer for problem in train]
    mark = time.perf_counter()
    pairs = rejection_samples(model, tokenizer, prompts[:SAMPLING_PROBLEMS], golds[:SAMPLING_PROBLEMS], config.seed)
    seconds["rejection_sampling"] = time.perf_counter() - mark
    mark = time.perf_counter()
    supervised_fine_tune(model, tokenizer, pairs, config.seed)
    seconds["sft"] = time.perf_counter() - mark
    sft_folder = folder / "sft"
    model.save_pretrained(sft_folder)
    tokenizer.save_pretrained(sft_folder)
    after_sft = held_out_accuracy(config, str(sft_folder), str(folder / "eval-sft"))
    mark = time.perf_counter()
    remaining = minutes * 60 - (mark - started)
    steps = grpo_until(model, tokenizer, prompts[SAMPLING_PROBLEMS:], golds[SAMPLING_PROBLEMS:], remaining,
                       folder / "grpo", config.seed)
    seconds["grpo"] = time.perf_counter() - mark
    rl_folder = folder / "rl"
    model.save_pretrained(rl_folder)
    tokenizer.save_pretrained(rl_folder)
    return {"minutes_budget": minutes, "kept_samples": len(pairs), "grpo_steps": steps,
            "stage_seconds": {name: round(value, 1) for name, value in seconds.items()},
            "pipeline_seconds": round(sum(seconds.values()), 1), "after_sft": after_sft,
            "after_rl": held_out_accuracy(config, str(rl_folder), str(folder / "eval-rl"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glue-minutes", type=float, help="the glue's wall budget (default: the demo's wall time)")
    parser.add_argument("--skip-demo", action="store_true", help="reuse the finished demo run for splits and prompts")
    parser.add_argument("--label", help="name of this comparison in the results file")
    parser.add_argument("--runs", default="runs/bench-demo-vs-trl")
    arguments = parser.parse_args()
    config = demo_config(arguments.budget, overrides=[f"seed={arguments.seed}",
                                                      f"output_dir={arguments.runs}/demo-seed{arguments.seed}"])
    summary = json.loads((Path(config.output_dir) / "summary.json").read_text()) if arguments.skip_demo \
        else run_demo(config)
    demo_minutes = summary["total_seconds"] / 60
    minutes = arguments.glue_minutes or demo_minutes
    label = arguments.label or f"seed{arguments.seed}-{minutes:.0f}min"
    glue = trl_glue(config, minutes, Path(arguments.runs) / f"glue-{label}")
    previous = json.loads((RESULTS / "demo_vs_trl.json").read_text()).get("runs", {}) \
        if (RESULTS / "demo_vs_trl.json").exists() else {}
    rows = {name: {key: row[key] for key in ("stage", "accuracy", "interval", "extraction_rate")}
            for name, row in summary["accuracy"].items()}
    previous[label] = {"seed": arguments.seed, "rftt_demo": {"minutes": round(demo_minutes, 1), "accuracy": rows,
                                                              "stage_seconds": {name: stage["seconds"] for name, stage
                                                                                in summary["stages"].items()}},
                       "trl_glue": glue}
    path = write_results("demo_vs_trl", {"runs": previous, "peak_memory_mib": round(peak_memory_mib(), 1)})
    after_rl = summary["accuracy"].get("eval-rl", {}).get("accuracy", float("nan"))
    print(f"\n{label}: rftt demo {demo_minutes:.1f} min, held-out after RL {after_rl:.1%}; TRL glue {minutes:.1f} min, "
          f"after SFT {glue['after_sft']['accuracy']:.1%}, after GRPO {glue['after_rl']['accuracy']:.1%} "
          f"({glue['grpo_steps']} steps)")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
