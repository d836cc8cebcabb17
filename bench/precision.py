"""fp32 against bf16 on the embedded model: a forward pass, greedy decoding with the hf engine, and a training step.

bf16 is measured both ways rftt uses it: weights loaded in bf16 (evaluation and search, `precision: native`) and fp32
weights under bf16 autocast (SFT and RL, `precision: native`). Best of `--repeats` after one warm-up each.

    python bench/precision.py
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import torch

from rftt.engine.hf import HFEngine
from rftt.engine.types import SamplingParams
from rftt.models import DEFAULT_MODEL, load_model
from rftt.precision import autocast, native_bf16

from common import peak_memory_mib, write_results

FORWARD_ROWS, FORWARD_LENGTH = 32, 128
DECODE_PROMPTS, DECODE_TOKENS = 64, 48
TRAIN_ROWS, TRAIN_LENGTH = 8, 256


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed runs of `work`, after one untimed warm-up run."""
    work()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def random_ids(rows: int, length: int) -> torch.Tensor:
    return torch.randint(100, 40_000, (rows, length), generator=torch.Generator().manual_seed(0))


def forward_seconds(model, precision: str, repeats: int) -> float:
    input_ids = random_ids(FORWARD_ROWS, FORWARD_LENGTH)

    def forward() -> None:
        with torch.no_grad(), autocast(precision, "cpu"):
            model(input_ids=input_ids)

    return best_seconds(forward, repeats)


def decode_seconds(model, tokenizer, precision: str, repeats: int) -> float:
    """Greedy decoding of DECODE_PROMPTS arithmetic prompts, DECODE_TOKENS new tokens each (end of text ignored)."""
    engine = HFEngine(model, tokenizer)
    prompts = [f"Calculate {index} + {2 * index + 7}. The answer is" for index in range(DECODE_PROMPTS)]
    params = SamplingParams(max_new_tokens=DECODE_TOKENS, ignore_eos=True)

    def decode() -> None:
        with autocast(precision, "cpu"):
            engine.generate(prompts, params)

    return best_seconds(decode, repeats)


def train_step_seconds(model, precision: str, repeats: int) -> float:
    """Forward, backward and an AdamW step on TRAIN_ROWS x TRAIN_LENGTH tokens, the weights in fp32."""
    input_ids = random_ids(TRAIN_ROWS, TRAIN_LENGTH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()

    def step() -> None:
        with autocast(precision, "cpu"):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = best_seconds(step, repeats)
    model.eval()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    model, tokenizer = load_model(arguments.model, dtype=torch.float32)
    model.eval()
    bf16_weights = copy.deepcopy(model).to(torch.bfloat16)
    seconds = {
        "forward": {"fp32": forward_seconds(model, "fp32", arguments.repeats),
                    "bf16 weights": forward_seconds(bf16_weights, "fp32", arguments.repeats),
                    "bf16 autocast": forward_seconds(model, "bf16", arguments.repeats)},
        "greedy decoding": {"fp32": decode_seconds(model, tokenizer, "fp32", arguments.repeats),
                            "bf16 weights": decode_seconds(bf16_weights, tokenizer, "fp32", arguments.repeats),
                            "bf16 autocast": decode_seconds(model, tokenizer, "bf16", arguments.repeats)},
    }
    del bf16_weights
    seconds["training step"] = {"fp32": train_step_seconds(model, "fp32", arguments.repeats),
                                "bf16 autocast": train_step_seconds(model, "bf16", arguments.repeats)}
    speedups = {work: {kind: round(times["fp32"] / value, 2) for kind, value in times.items() if kind != "fp32"}
                for work, times in seconds.items()}
    print(f"native bf16 on this CPU: {native_bf16('cpu')}")
    print(f"{'work':<18}{'kind':<16}{'seconds':>9}{'fp32 / this':>13}")
    for work, times in seconds.items():
        for kind, value in times.items():
            ratio = "" if kind == "fp32" else f"{times['fp32'] / value:.2f}x"
            print(f"{work:<18}{kind:<16}{value:>9.2f}{ratio:>13}")
    path = write_results("precision", {
        "model": arguments.model, "native_bf16": native_bf16("cpu"),
        "shapes": {"forward": [FORWARD_ROWS, FORWARD_LENGTH], "greedy decoding": [DECODE_PROMPTS, DECODE_TOKENS],
                   "training step": [TRAIN_ROWS, TRAIN_LENGTH]},
        "seconds": {work: {kind: round(value, 3) for kind, value in times.items()} for work, times in seconds.items()},
        "speedup_over_fp32": speedups, "peak_memory_mib": round(peak_memory_mib(), 1)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
