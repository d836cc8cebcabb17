"""The reference demo task and its evaluation, exactly as ../shared/DESIGN.md ("Facts for the demo task") gives
them, shared by the benchmarks that compare pipelines on it (bench/demo_vs_trl.py, bench/rl_parity.py).

- Splits: training = the preset with seed 1, size 2000; held-out = seed 100000, size 450, every question that
  occurs in training dropped, the first 200 kept.
- Prompt: the model's chat template (its default system prompt) with the question and the reference suffix,
  which is rftt's `chat_steps` template.
- Score: the last brace-matched `\\boxed{}`, `$`, commas and spaces stripped, as a float equal to the gold within
  1e-6 (strict: no box, no answer). Greedy, 128 new tokens, batches of 50, left padding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from rftt.data import Problem, load_problems
from rftt.precision import autocast
from rftt.prompts import get_template
from rftt.stats import paired_difference, wilson_interval

TRAIN_SEED, TRAIN_SIZE = 1, 2000
HELD_OUT_SEED, HELD_OUT_CANDIDATES, HELD_OUT_PROBLEMS = 100_000, 450, 200
TEMPLATE = "chat_steps"
EVAL_TOKENS, EVAL_BATCH = 128, 50
TOLERANCE = 1e-6


def reference_splits(task: str = "arithmetic", held_out: int = HELD_OUT_PROBLEMS,
                     candidates: int = HELD_OUT_CANDIDATES) -> tuple[list[Problem], list[Problem]]:
    """(training problems, held-out problems without any training question)."""
    train = list(load_problems(task, size=TRAIN_SIZE, seed=TRAIN_SEED))
    seen = {problem.question for problem in train}
    fresh = [problem for problem in load_problems(task, size=candidates, seed=HELD_OUT_SEED)
             if problem.question not in seen]
    if len(fresh) < held_out:
        raise SystemExit(f"only {len(fresh)} of {candidates} held-out candidates are new; ask for fewer")
    return train, fresh[:held_out]


def render_prompts(tokenizer: Any, problems: Sequence[Problem]) -> list[str]:
    """The reference prompt for each problem (rftt's `chat_steps` template)."""
    template = get_template(TEMPLATE)
    return [template.render(problem.question, tokenizer) for problem in problems]


def last_boxed(text: str) -> str | None:
    """The content of the last brace-matched `\\boxed{...}`, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, position = 0, start + len("\\boxed{") - 1
    for index in range(position, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[position + 1 : index]
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(re.sub(r"[$,\s]", "", text))
    except ValueError:
        return None


def _equal(answer: str | None, gold: str) -> bool:
    value, target = _number(answer), _number(gold)
    return value is not None and target is not None and abs(value - target) <= TOLERANCE


def boxed_correct(text: str, gold: str) -> bool:
    """The reference's strict score: the last box, as a number, equals the gold."""
    return _equal(last_boxed(text), gold)


def last_number(text: str) -> str | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return numbers[-1] if numbers else None


def kept_warm_up_response(text: str, gold: str) -> str | None:
    """The reference keep rule: a sample whose box, or without a box its last number, equals the gold is kept,
    with ` \\boxed{gold}` appended where it has no box; anything else is dropped (None)."""
    if last_boxed(text) is not None:
        return text if boxed_correct(text, gold) else None
    if _equal(last_number(text), gold):
        return f"{text.rstrip()} \\boxed{{{gold}}}"
    return None


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
             precision: str = "fp32", samples: int = 1, temperature: float = 0.0) -> list[str]:
    """`model.generate` over left-padded batches (greedy at temperature 0); `samples` completions a prompt."""
    tokenizer.padding_side = "left"
    texts: list[str] = []
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature else \
        {"do_sample": False}
    model.eval()
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True,
                          add_special_tokens=False)
        with torch.no_grad(), autocast(precision, torch.device("cpu")):
            output = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=samples,
                                    pad_token_id=tokenizer.pad_token_id, **sampling)
        texts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


def held_out_accuracy(model: Any, tokenizer: Any, problems: Sequence[Problem], output: Path,
                      precision: str = "fp32") -> dict[str, Any]:
    """Greedy strict accuracy with its 95% interval and boxed rate; each problem's record to `output`."""
    texts = generate(model, tokenizer, render_prompts(tokenizer, problems), max_new_tokens=EVAL_TOKENS,
                     batch_size=EVAL_BATCH, precision=precision)
    records = [{"id": problem.id, "question": problem.question, "gold": problem.answer, "completion": text,
                "boxed": last_boxed(text), "correct": boxed_correct(text, problem.answer)}
               for problem, text in zip(problems, texts)]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(record) + "\n" for record in records))
    correct = sum(record["correct"] for record in records)
    return {"accuracy": correct / len(records), "interval": list(wilson_interval(correct, len(records))),
            "correct": correct, "problems": len(records),
            "boxed_rate": sum(record["boxed"] is not None for record in records) / len(records),
            "mean_completion_characters": sum(len(text) for text in texts) / len(texts),
            "records": str(output)}


def paired_change(before: Path, after: Path) -> dict[str, float]:
    """The paired change of accuracy between two scorings of the same problems (`held_out_accuracy` records),
    with its standard error and the problems gained and lost."""
    def outcomes(path: Path) -> list[bool]:
        return [json.loads(line)["correct"] for line in path.read_text().splitlines()]

    return paired_difference(outcomes(before), outcomes(after))
