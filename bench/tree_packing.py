"""Tree-packed training forward on demo rollouts of the embedded model: how much a step's trajectories share
(unique tokens / all tokens) and the seconds and peak memory of the log-prob and update phases, packed against
unpacked on the same rollouts from the same weights, in one run, fp32 and bf16.

Two kinds of step, with `rftt demo`'s RL settings (4 prompts x 8 trajectories, one update on all 32, micro-batches
of 16) from a warm-up checkpoint (`--model`, e.g. a demo run's `sft/final`):
- demo: the demo's sampled groups without a KL term, so the update is the only training pass;
- tree: token-guided tree rollouts (8 per prompt) with KL 0.01 in the reward, so the old policy's and the
  reference's log-prob passes run before the update.
Each mode runs `repeats` times from the same weights and optimizer state, the two modes alternating which goes
first; seconds are the fastest repeat's. Peak memory is the resident set's rise during the phases over its level
before them (free heap returned to the system first), the largest over the repeats.

    python bench/tree_packing.py --model runs/bench-demo/native-seed0/sft/final
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from rftt.config import load_config, to_dict
from rftt.demo import demo_config
from rftt.train.packing import TrainingForward, batch_sequences, pack_sequences
from rftt.train.rl import RLConfig, RLTrainer
from rftt.train.rl_model import build_sequences
from rftt.train.rl_steps import PhaseTimer

from common import RESULTS, cpu_flags, cpu_model, peak_memory_mib, write_results

KINDS = {
    "demo": [],
    "tree": ["rollout.kind=tree", "rollout.temperature=0.7", "rollout.tree.step_max_tokens=48", "advantage=reinforce_pp",
             "rollout.search={rollouts: 8, parallel_rollouts: 4, selection: uct, exploration: 2.0, "
             "unvisited_order: prior, max_depth: 6}", "kl={coefficient: 0.01, estimator: k1, placement: reward}"],
}
MODES = ("unpacked", "packed")


class PeakResident:
    """The resident set's largest rise over its level at entry, polled every millisecond."""

    def __init__(self) -> None:
        self.rise_mib = 0.0
        self._running = False

    @staticmethod
    def resident_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self) -> "PeakResident":
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self._start, self._running = self.resident_mib(), True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while self._running:
            self.rise_mib = max(self.rise_mib, self.resident_mib() - self._start)
            time.sleep(0.001)

    def __exit__(self, *exception: Any) -> None:
        self._running = False
        self._thread.join()


def rl_config(model: str, kind: str, precision: str, output: Path, overrides: list[str]) -> RLConfig:
    """The demo's RL settings for `kind`, from `model`, in `precision`."""
    output.mkdir(parents=True, exist_ok=True)
    recipe = output / "rl.yaml"
    settings = {key: value for key, value in to_dict(demo_config().rl).items() if key not in ("model", "output_dir")}
    recipe.write_text(yaml.safe_dump(settings))
    return load_config(RLConfig, recipe, [f"model={model}", f"precision={precision}", "dev=null", "eval_every=0",
                                          "save_every=0", "log_rollouts=false", f"output_dir={output}",
                                          *KINDS[kind], *overrides])


def sharing(trainer: RLTrainer, packed_forward: TrainingForward, batch: Any) -> dict[str, float]:
    """Unique over all tokens: the whole step in one prefix tree, and in the micro-batches packing makes."""
    sequences = build_sequences(batch.prompt_ids, batch.response_ids, trainer.tokenizer.pad_token_id)
    tokens = batch_sequences(sequences)
    chunks = packed_forward.micro_batches(sequences, torch.arange(len(tokens)))
    packed = sum(pack_sequences([tokens[row] for row in chunk.tolist()]).length for chunk in chunks)
    return {"whole_step": round(pack_sequences(tokens).sharing_ratio(), 3),
            "micro_batches": round(packed / sum(len(sequence) for sequence in tokens), 3),
            "trajectories": len(tokens), "tokens": sum(len(sequence) for sequence in tokens),
            "packed_micro_batches": len(chunks)}


def measure(model: str, kind: str, precision: str, repeats: int, output: Path, overrides: list[str]) -> dict[str, Any]:
    """One step's rollouts, then the log-prob and update phases in each mode from the same starting state."""
    trainer = RLTrainer(rl_config(model, kind, precision, output, overrides))
    packed_forward = trainer.forward
    assert packed_forward.attention is not None, "packing is off for this model"
    started = time.perf_counter()
    batch = trainer.rollout(trainer.local_problems(0), 0)
    rollout_seconds = time.perf_counter() - started
    start = [copy.deepcopy(trainer.policy.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()),
             copy.deepcopy(trainer.scheduler.state_dict())]
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    changes: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for mode in (MODES if repeat % 2 == 0 else MODES[::-1]):
            trainer.policy.load_state_dict(start[0])
            trainer.optimizer.load_state_dict(start[1])
            trainer.scheduler.load_state_dict(start[2])
            trainer.forward = packed_forward if mode == "packed" else TrainingForward(trainer.config.micro_batch_size)
            timer = PhaseTimer()
            with PeakResident() as peak:
                experience = trainer.experience_of(batch, timer)
                with timer.phase("update"):
                    trainer.update(experience, 0)
            runs[mode].append({"logprobs": timer.seconds["logprobs"], "update": timer.seconds["update"],
                               "rise_mib": peak.rise_mib})
            changes[mode] = torch.cat([(parameter.detach() - start[0][name]).flatten()
                                       for name, parameter in trainer.policy.state_dict().items()])
    best = {mode: {phase: min(run[phase] for run in runs[mode]) for phase in ("logprobs", "update")}
            for mode in MODES}
    return {
        "settings": overrides,
        "sharing": sharing(trainer, packed_forward, batch),
        "rollout_seconds": round(rollout_seconds, 2),
        "seconds": {mode: {phase: round(value, 2) for phase, value in best[mode].items()} for mode in MODES},
        "speedup": {phase: round(best["unpacked"][phase] / best["packed"][phase], 2) if best["packed"][phase] > 0.05
                    else None for phase in ("logprobs", "update")},
        "training_passes_speedup": round(sum(best["unpacked"].values()) / sum(best["packed"].values()), 2),
        "step_seconds": {mode: round(rollout_seconds + sum(best[mode].values()), 1) for mode in MODES},
        "peak_rise_mib": {mode: round(max(run["rise_mib"] for run in runs[mode]), 1) for mode in MODES},
        "update_relative_difference": float((changes["packed"] - changes["unpacked"]).norm()
                                            / changes["unpacked"].norm().clamp(min=1e-30)),
        "repeats": {mode: [{key: round(value, 2) for key, value in run.items()} for run in runs[mode]]
                    for mode in MODES},
    }


def table(results: dict[str, Any]) -> str:
    header = ["precision", "kind", "shared: step / micro-batches", "log-probs s (x)", "update s (x)",
              "step s unpacked -> packed", "peak rise MiB unpacked / packed"]
    rows = []
    for label, result in results.items():
        precision, kind = label.split("-", 1)
        seconds, speedup = result["seconds"], result["speedup"]

        def phase(name: str) -> str:
            if speedup[name] is None:
                return "skipped"
            return f"{seconds['unpacked'][name]:.1f} -> {seconds['packed'][name]:.1f} ({speedup[name]:.2f}x)"

        rows.append([precision, kind, f"{result['sharing']['whole_step']:.2f} / {result['sharing']['micro_batches']:.2f}",
                     phase("logprobs"), phase("update"),
                     f"{result['step_seconds']['unpacked']:.1f} -> {result['step_seconds']['packed']:.1f}",
                     f"{result['peak_rise_mib']['unpacked']:.0f} / {result['peak_rise_mib']['packed']:.0f}"])
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)) for row in [header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a warm-up checkpoint with functional tokens")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an RL setting, e.g. packed_tokens=1024")
    parser.add_argument("--label", default="", help="a suffix for these results' labels (a variant's)")
    arguments = parser.parse_args()
    path = RESULTS / "tree_packing.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        for precision in arguments.precisions:
            for kind in arguments.kinds:
                label = f"{precision}-{kind}" + (f"-{arguments.label}" if arguments.label else "")
                results[label] = measure(arguments.model, kind, precision, arguments.repeats, Path(folder) / label,
                                         arguments.set)
                print(table(results), flush=True)
    write_results("tree_packing", {"model": arguments.model, "results": results, "peak_memory_mib": peak_memory_mib(),
                                   "cpu_model": cpu_model(), "cpu_flags": cpu_flags()})


if __name__ == "__main__":
    main()
