"""Generation throughput of the hf engine against plain `model.generate`, and through `rftt serve`.

On the embedded model, greedy, exactly 128 new tokens per row (end-of-sequence ignored on
both sides), chat-templated arithmetic prompts. Each batch size is timed for both in the
same run, alternating; this machine's timings are noisy, so each ratio is given both as
best-of-`--repeats` (ours / theirs) and as the median of the paired per-repeat ratios.

    python bench/engine_throughput.py
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import httpx
import torch

from rftt.data import load_problems
from rftt.engine import SamplingParams, make_engine
from rftt.models import DEFAULT_MODEL, load_model
from rftt.prompts import get_template

from common import peak_memory_mib, write_results

NEW_TOKENS = 128


def time_model_generate(model, tokenizer, prompts: list[str]) -> float:
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
    assert output.shape[1] - batch["input_ids"].shape[1] == NEW_TOKENS
    return seconds


def time_engine(engine, prompts: list[str]) -> float:
    params = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    started = time.perf_counter()
    results = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    assert all(len(samples[0].token_ids) == NEW_TOKENS for samples in results)
    return seconds


def start_server(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "rftt.cli", "serve", "--model", DEFAULT_MODEL, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("rftt serve did not start")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--serve-batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    model, tokenizer = load_model(DEFAULT_MODEL)
    model.eval()
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    template = get_template("chat")
    questions = [problem.question for problem in load_problems("arithmetic", size=max(arguments.batches), seed=7)]
    prompts = [template.render(question, tokenizer) for question in questions]
    time_engine(engine, prompts[:2])
    time_model_generate(model, tokenizer, prompts[:2])

    rows = []
    for batch in arguments.batches:
        ours, theirs = [], []
        for _ in range(arguments.repeats):
            theirs.append(time_model_generate(model, tokenizer, prompts[:batch]))
            ours.append(time_engine(engine, prompts[:batch]))
        tokens = batch * NEW_TOKENS
        paired = sorted(their_seconds / our_seconds for their_seconds, our_seconds in zip(theirs, ours))
        rows.append({"batch": batch, "engine_tokens_per_second": round(tokens / min(ours), 1),
                     "generate_tokens_per_second": round(tokens / min(theirs), 1),
                     "ratio_engine_to_generate": round(min(theirs) / min(ours), 3),
                     "median_paired_ratio": round(paired[len(paired) // 2], 3),
                     "paired_ratios": [round(ratio, 3) for ratio in paired]})
        print(rows[-1], flush=True)

    port = free_port()
    server = start_server(port)
    remote = make_engine("openai", base_url=f"http://127.0.0.1:{port}", model=DEFAULT_MODEL)
    serve_rows = []
    try:
        time_engine(remote, prompts[:2])
        for batch in arguments.serve_batches:
            in_process = min(time_engine(engine, prompts[:batch]) for _ in range(arguments.repeats))
            served = min(time_engine(remote, prompts[:batch]) for _ in range(arguments.repeats))
            serve_rows.append({"batch": batch, "served_tokens_per_second": round(batch * NEW_TOKENS / served, 1),
                               "ratio_served_to_in_process": round(in_process / served, 3)})
            print(serve_rows[-1], flush=True)
    finally:
        server.terminate()
        server.wait()

    path = write_results("engine_throughput", {
        "model": DEFAULT_MODEL, "new_tokens": NEW_TOKENS, "repeats": arguments.repeats, "threads": torch.get_num_threads(),
        "hf_engine_vs_model_generate": rows, "rftt_serve_vs_in_process": serve_rows,
        "peak_memory_mib": round(peak_memory_mib(), 1),
    })
    print(f"\n{'batch':>6}{'engine tok/s':>14}{'generate tok/s':>16}{'best/best':>11}{'median':>8}")
    for row in rows:
        print(f"{row['batch']:>6}{row['engine_tokens_per_second']:>14}{row['generate_tokens_per_second']:>16}"
              f"{row['ratio_engine_to_generate']:>11}{row['median_paired_ratio']:>8}")
    for row in serve_rows:
        print(f"served batch {row['batch']}: {row['served_tokens_per_second']} tok/s, "
              f"{row['ratio_served_to_in_process']} of in-process")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
