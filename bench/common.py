"""Shared by the benchmark scripts: where results go, and peak memory."""

from __future__ import annotations

import json
import platform
import resource
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, figures: dict, indent: int | None = 2) -> Path:
    """Write a benchmark's figures, with the command and machine that made them, to results/NAME.json
    (`indent=None`: one line per run of `figures["runs"]`, for benchmarks that keep many runs)."""
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.machine(), "cpu_model": cpu_model(),
                    "cpu_flags": cpu_flags(), "cpus": _cpus()},
        **figures,
    }
    path = RESULTS / f"{name}.json"
    if indent is None and isinstance(record.get("runs"), dict):
        lines = [f"  {json.dumps(label)}: {json.dumps(run, separators=(',', ':'))}" for label, run in record["runs"].items()]
        head = json.dumps({key: value for key, value in record.items() if key != "runs"}, indent=2)[:-2]
        path.write_text(head + ',\n  "runs": {\n' + ",\n".join(f"  {line}" for line in lines) + "\n  }\n}\n")
    else:
        path.write_text(json.dumps(record, indent=indent) + "\n")
    return path


def earlier_runs(name: str, label: str | None) -> dict:
    """The labelled runs already in results/NAME.json (kept when this run is labelled too), without this label:
    two versions of the code, run in turn, compare in one file."""
    path = RESULTS / f"{name}.json"
    if label is None or not path.exists():
        return {}
    runs = json.loads(path.read_text()).get("runs", {})
    return {run_label: run for run_label, run in runs.items() if run_label != label} if isinstance(runs, dict) else {}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (a timing holds for one CPU; flags alone do not tell an AMD EPYC from a Xeon)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def cpu_flags() -> list[str]:
    """The CPU's bf16-related flags (timings differ by a factor of 2-3 with and without them)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})
