"""The GPU checks of issue 25, in one run on a GPU machine (`bench/gpu_check.sh` prepares and calls it).

1. The hf engine against `model.generate` (bf16, greedy, `--new-tokens` each, end-of-sequence ignored), at
   batch 1, 16, 64 and 256, on randomly initialised SmolLM2-135M and a Qwen2-1.5B-shaped model (its vocabulary
   the carried SmolLM2 tokenizer's, so every sampled token decodes); best of two, alternating.
2. One RL step of each recipe (rftt tree rollouts, ReFT PPO with a critic, GRPO) on the 1.5B shape in bf16:
   seconds of the step and peak GPU memory.
3. `rftt demo --budget small` on the random SmolLM2, GPU memory and utilisation sampled every second and
   attributed to the stage running (a random model finds no correct path, so the demo stops at SFT, as it should).

Random weights are honest for throughput, memory and step time, not for accuracy. `--dry-run` runs every part
with tiny shapes on the CPU, to check the script itself where there is no GPU.

    python bench/gpu_check.py --tokenizer .gpu-carry/smollm2 --out $OUT
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rftt.config import load_config
from rftt.engine import SamplingParams, make_engine
from rftt.tokens import add_functional_tokens, save_step_tags
from rftt.train.rl import RLConfig, run_rl

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RL_RECIPES = ("rftt_arithmetic.yaml", "reft_gsm8k.yaml", "grpo_arithmetic.yaml")
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
                "tie_word_embeddings": True}
QWEN2_1_5B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "tie_word_embeddings": True}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": True}
STAGE_START = "== "


def load_tokenizer(folder: str) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def random_model(kind: str, shape: dict[str, Any], vocabulary: int) -> torch.nn.Module:
    """A randomly initialised model of a shape, its vocabulary the tokenizer's."""
    torch.manual_seed(0)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocabulary, **shape))
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocabulary, **shape))


def timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def engine_against_generate(model, tokenizer, batches: list[int], new_tokens: int) -> list[dict[str, Any]]:
    """Tokens/s of the hf engine and of `model.generate` on the same prompts, best of two, alternating."""
    engine = make_engine("hf", model=model, tokenizer=tokenizer, max_batch_rows=max(batches))
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    rows = []
    for batch in batches:
        prompts = [f"Calculate {index} + {index * 7 % 100}." for index in range(batch)]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)

        def generate() -> None:
            model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)

        ours, theirs = [], []
        for _ in range(2):
            theirs.append(timed(generate))
            ours.append(timed(lambda: engine.generate(prompts, params)))
        rows.append({"batch": batch, "engine_tokens_per_second": round(batch * new_tokens / min(ours), 1),
                     "generate_tokens_per_second": round(batch * new_tokens / min(theirs), 1),
                     "ratio_engine_to_generate": round(min(theirs) / min(ours), 3)})
        print(rows[-1], flush=True)
    return rows


def policy_checkpoint(model, tokenizer, folder: Path) -> Path:
    """A random policy with the functional tokens, saved as a checkpoint the RL recipes can start from."""
    tags = add_functional_tokens(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_step_tags(folder, tags)
    return folder


def rl_steps(checkpoint: Path, work: Path, device: str, precision: str) -> list[dict[str, Any]]:
    """Seconds and peak GPU memory of one step of each recipe."""
    data = work / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
                            for i in range(64)))
    rows = []
    for recipe in RL_RECIPES:
        config = load_config(RLConfig, RECIPES / recipe, [
            f"model={checkpoint}", f"output_dir={work / recipe}", "dataset={name: json, path: " + str(data) + "}",
            "steps=1", "dev=null", "save_every=0", "eval_every=0", f"device={device}", f"precision={precision}"])
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        [metrics] = run_rl(config)
        row = {"recipe": recipe, "step_seconds": round(time.perf_counter() - started, 1),
               "phases": {name: round(seconds, 2) for name, seconds in metrics["seconds"].items()},
               "policy_loss": metrics["policy_loss"],
               "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available()
               else None}
        rows.append(row)
        print(row, flush=True)
    return rows


def gpu_sample() -> tuple[float, float] | None:
    """(memory used in MiB, utilisation %) of the first GPU from nvidia-smi; None without one."""
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None
    memory, utilisation = (float(value) for value in line.split(","))
    return memory, utilisation


def demo_with_gpu_samples(model_folder: Path, output: Path, device: str, timeout: float) -> dict[str, Any]:
    """`rftt demo --budget small` on a model, the GPU sampled each second and attributed to the running stage."""
    command = [sys.executable, "-m", "rftt.cli", "demo", "--budget", "small", "--model", str(model_folder),
               "--output-dir", str(output), "--set", f"device={device}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage = {"name": "start"}
    samples: dict[str, list[tuple[float, float]]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            reading = gpu_sample()
            if reading is not None:
                samples.setdefault(stage["name"], []).append(reading)
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith(STAGE_START):
            stage["name"] = line[len(STAGE_START):].strip(" =\n")
        if time.monotonic() > deadline:
            process.kill()
            break
    process.wait()
    done.set()
    sampler.join()
    per_stage = {name: {"samples": len(readings), "max_memory_mib": max(memory for memory, _ in readings),
                        "max_utilisation_percent": max(utilisation for _, utilisation in readings)}
                 for name, readings in samples.items()}
    return {"command": " ".join(command), "exit_code": process.returncode, "per_stage": per_stage,
            "last_lines": lines[-15:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a folder with the SmolLM2 tokenizer files")
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.json goes (rewritten after each part)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rftt-gpu-check"), help="models and runs (gigabytes)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--demo-timeout", type=float, default=120.0)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, to check the script")
    arguments = parser.parse_args()
    out, work = arguments.out, arguments.work
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if arguments.dry_run else "cuda"
    dtype = torch.float32 if arguments.dry_run else torch.bfloat16
    tokenizer = load_tokenizer(arguments.tokenizer)
    shapes = {"smollm2-135m": ("llama", TINY if arguments.dry_run else SMOLLM2_135M),
              "qwen2-1.5b-shape": ("qwen2", TINY if arguments.dry_run else QWEN2_1_5B)}
    batches = [1, 2] if arguments.dry_run else [1, 16, 64, 256]
    new_tokens = 4 if arguments.dry_run else arguments.new_tokens
    figures: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                               "torch": torch.__version__, "dry_run": arguments.dry_run, "engine_vs_generate": {}}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")

    models = {}
    for name, (kind, shape) in shapes.items():
        models[name] = random_model(kind, shape, len(tokenizer)).to(device=device, dtype=dtype).eval()
        figures["engine_vs_generate"][name] = engine_against_generate(models[name], tokenizer, batches, new_tokens)
        save()
    models["smollm2-135m"].save_pretrained(work / "smollm2-random")
    tokenizer.save_pretrained(work / "smollm2-random")
    checkpoint = policy_checkpoint(models.pop("qwen2-1.5b-shape"), tokenizer, work / "qwen-policy")
    models.clear()
    figures["rl_step_1_5b_shape"] = rl_steps(checkpoint, work, device, "fp32" if arguments.dry_run else "bf16")
    save()
    figures["demo_small"] = demo_with_gpu_samples(work / "smollm2-random", work / "demo", device, arguments.demo_timeout)
    save()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
