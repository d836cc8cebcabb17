"""Seconds per optimizer step and tokens/s of SFT on the embedded model: full fine-tuning vs LoRA r16.

A batch of 8 sequences x 256 tokens (response tokens carry the loss), AdamW as the Trainer
sets it up, fp32 on this CPU; best of `--steps` timed steps after one warm-up step.

    python bench/sft_throughput.py
"""

from __future__ import annotations

import argparse
import time

import torch

from rftt.models import DEFAULT_MODEL, load_model
from rftt.train.weights import LoraSettings, apply_lora

from common import peak_memory_mib, write_results

BATCH, LENGTH = 8, 256


def time_steps(model, steps: int) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(100, 40_000, (BATCH, LENGTH), generator=generator)
    labels = input_ids.clone()
    labels[:, : LENGTH // 4] = -100
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-5)
    model.train()
    seconds = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    arguments = parser.parse_args()
    rows = {}
    for name in ("full", "lora_r16"):
        model, _ = load_model(DEFAULT_MODEL, dtype=torch.float32)
        if name == "lora_r16":
            model = apply_lora(model, LoraSettings(rank=16), [])
        trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
        seconds = time_steps(model, arguments.steps)
        rows[name] = {"seconds_per_step": round(min(seconds), 2), "all_steps": [round(s, 2) for s in seconds],
                      "tokens_per_second": round(BATCH * LENGTH / min(seconds), 1), "trainable_parameters": trainable}
        print(name, rows[name], flush=True)
    figures = {"model": DEFAULT_MODEL, "batch": BATCH, "sequence_length": LENGTH, "threads": torch.get_num_threads(),
               **rows, "lora_to_full_speed_ratio": round(rows["full"]["seconds_per_step"]
                                                         / rows["lora_r16"]["seconds_per_step"], 2),
               "peak_memory_mib": round(peak_memory_mib(), 1)}
    path = write_results("sft_throughput", figures)
    print(f"\n{'mode':<10}{'s/step':>8}{'tokens/s':>10}{'trainable':>13}")
    for name, row in rows.items():
        print(f"{name:<10}{row['seconds_per_step']:>8}{row['tokens_per_second']:>10}{row['trainable_parameters']:>13}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
