"""`rftt demo`: the pipeline as far as it goes today, on the embedded model with no network.

Stages: load (and on first use convert) the model, add the functional tokens, load the
problems, answer them greedily in batches, verify the answers, print a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rftt.data import DatasetSpec, load_problems
from rftt.models import load_model
from rftt.stats import wilson_interval
from rftt.tokens import add_functional_tokens
from rftt.verify import check_many

DEMO_PROBLEMS = 200
DEMO_SEED = 100_000
INSTRUCTION = "{question}\nGive the final answer as \\boxed{{answer}}."


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[Generation]:
    """Greedy completions of chat prompts, in left-padded batches."""
    tokenizer.padding_side = "left"
    generations: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
            for prompt in prompts[start : start + batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        for row in output[:, batch["input_ids"].shape[1] :]:
            new_tokens = int((row != tokenizer.pad_token_id).sum())
            generations.append(Generation(tokenizer.decode(row, skip_special_tokens=True), new_tokens))
        print(f"  answered {len(generations)}/{len(prompts)}", flush=True)
    return generations


def run_demo(model_name: str, spec: DatasetSpec, max_new_tokens: int, batch_size: int) -> int:
    """Run the stages and print what each took and how well the model did."""
    seconds: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        seconds[name] = time.perf_counter() - started
        print(f"[{name}] {seconds[name]:.1f} s", flush=True)

    started = time.perf_counter()
    model, tokenizer = load_model(model_name)
    stage("load model", started)

    started = time.perf_counter()
    tokens = add_functional_tokens(model, tokenizer)
    stage("add functional tokens", started)
    print(f"  {len(tokens.all_ids)} functional tokens, ids {min(tokens.all_ids)}-{max(tokens.all_ids)}")

    started = time.perf_counter()
    if spec.size is None and spec.name == "arithmetic":
        spec = DatasetSpec(name=spec.name, size=DEMO_PROBLEMS, seed=spec.seed if spec.seed is not None else DEMO_SEED,
                           limit=spec.limit)
    problems = load_problems(spec)
    stage("load problems", started)

    started = time.perf_counter()
    generations = greedy_answers(model, tokenizer, [INSTRUCTION.format(question=p.question) for p in problems],
                                 max_new_tokens, batch_size)
    stage("generate", started)

    started = time.perf_counter()
    outcomes = check_many([generation.text for generation in generations], [problem.answer for problem in problems])
    stage("verify", started)

    correct = sum(outcome.correct for outcome in outcomes)
    extracted = sum(outcome.extracted is not None for outcome in outcomes)
    low, high = wilson_interval(correct, len(problems))
    new_tokens = sum(generation.new_tokens for generation in generations)
    print(f"\n{'problems':<28}{len(problems)}")
    print(f"{'answers extracted':<28}{extracted / len(problems):.1%}")
    print(f"{'accuracy (greedy)':<28}{correct / len(problems):.1%}  (95% interval {low:.1%}-{high:.1%})")
    print(f"{'accuracy among extracted':<28}{correct / max(extracted, 1):.1%}")
    print(f"{'generation tokens/s':<28}{new_tokens / seconds['generate']:.1f}")
    example = generations[0].text.strip().replace("\n", " ")[:160]
    print(f"\nexample: {problems[0].question}\n  -> {example}\n  gold {problems[0].answer}, {outcomes[0]}")
    return 0
