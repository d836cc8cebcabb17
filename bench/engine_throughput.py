"""Generation throughput of the hf engine against plain `model.generate`, and through `rftt serve`.

On the embedded model, greedy, exactly 128 new tokens per row (end-of-sequence ignored on
both sides), chat-templated arithmetic prompts. Each batch size is timed for both in the
same run, alternating; this machine's timings are noisy, so each ratio is given both as
best-of-`--repeats` (ours / theirs) and as the median of the paired per-repeat ratios.
Streamed serving: the same number of concurrent one-prompt requests, streamed and not,
alternating; the streamed texts must equal the others; and the time to the first streamed
text at batch 1.

    python bench/engine_throughput.py [--only-serve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def served_requests(url: str, prompts: list[str], stream: bool) -> tuple[float, list[str], float]:
    """Seconds for concurrent one-prompt requests (streamed or not), their texts, and the first text's latency.
    A plain HTTP client reads the events, so the client's own parsing takes little of the 2 cores from the server."""
    started = time.perf_counter()
    first_text: list[float] = []

    async def one(client: httpx.AsyncClient, prompt: str) -> str:
        body = {"model": DEFAULT_MODEL, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
                "ignore_eos": True, "stream": stream}
        if not stream:
            return (await client.post(f"{url}/v1/completions", json=body)).json()["choices"][0]["text"]
        pieces = []
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    text = json.loads(line[len("data: "):])["choices"][0]["text"]
                    if text and not first_text:
                        first_text.append(time.perf_counter() - started)
                    pieces.append(text)
        return "".join(pieces)

    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=len(prompts))) as client:
        texts = await asyncio.gather(*(one(client, prompt) for prompt in prompts))
    return time.perf_counter() - started, list(texts), first_text[0] if first_text else float("nan")


def streamed_rows(url: str, prompts: list[str], batches: list[int], repeats: int) -> tuple[list[dict], dict]:
    """Served tokens/s streamed against not streamed per batch (alternating, best of `repeats`), and the time to
    the first streamed text of a single request."""
    rows = []
    for batch in batches:
        plain, streamed, equal = [], [], True
        for _ in range(repeats):
            seconds, texts, _ = asyncio.run(served_requests(url, prompts[:batch], stream=False))
            plain.append(seconds)
            seconds, streamed_texts, _ = asyncio.run(served_requests(url, prompts[:batch], stream=True))
            streamed.append(seconds)
            equal = equal and streamed_texts == texts
        rows.append({"batch": batch, "served_tokens_per_second": round(batch * NEW_TOKENS / min(plain), 1),
                     "streamed_tokens_per_second": round(batch * NEW_TOKENS / min(streamed), 1),
                     "ratio_streamed_to_not": round(min(plain) / min(streamed), 3),
                     "streamed_texts_equal": equal})
        print(rows[-1], flush=True)
    firsts = [asyncio.run(served_requests(url, prompts[:1], stream=True)) for _ in range(repeats)]
    whole = min(seconds for seconds, _, _ in firsts)
    first = {"batch": 1, "time_to_first_text_seconds": round(min(latency for _, _, latency in firsts), 3),
             "whole_answer_seconds": round(whole, 3)}
    print(first, flush=True)
    return rows, first


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
    parser.add_argument("--only-serve", action="store_true", help="skip the engine against model.generate")
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
    for batch in [] if arguments.only_serve else arguments.batches:
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
        stream_rows, first_text = streamed_rows(f"http://127.0.0.1:{port}", prompts, arguments.serve_batches,
                                                arguments.repeats)
    finally:
        server.terminate()
        server.wait()

    path = write_results("engine_throughput_serve" if arguments.only_serve else "engine_throughput", {
        "model": DEFAULT_MODEL, "new_tokens": NEW_TOKENS, "repeats": arguments.repeats, "threads": torch.get_num_threads(),
        "hf_engine_vs_model_generate": rows, "rftt_serve_vs_in_process": serve_rows,
        "streamed_vs_not_streamed": stream_rows, "streamed_time_to_first_text": first_text,
        "peak_memory_mib": round(peak_memory_mib(), 1),
    })
    print(f"\n{'batch':>6}{'engine tok/s':>14}{'generate tok/s':>16}{'best/best':>11}{'median':>8}")
    for row in rows:
        print(f"{row['batch']:>6}{row['engine_tokens_per_second']:>14}{row['generate_tokens_per_second']:>16}"
              f"{row['ratio_engine_to_generate']:>11}{row['median_paired_ratio']:>8}")
    for row in serve_rows:
        print(f"served batch {row['batch']}: {row['served_tokens_per_second']} tok/s, "
              f"{row['ratio_served_to_in_process']} of in-process")
    for row in stream_rows:
        print(f"streamed batch {row['batch']}: {row['streamed_tokens_per_second']} tok/s, "
              f"{row['ratio_streamed_to_not']} of not streamed, texts equal: {row['streamed_texts_equal']}")
    print(f"time to first streamed text at batch 1: {first_text['time_to_first_text_seconds']} s "
          f"(whole answer {first_text['whole_answer_seconds']} s)")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
