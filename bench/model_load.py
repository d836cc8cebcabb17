"""Load time of the embedded model: first load (GGUF -> Hugging Face conversion) vs cached load.

Each load runs in a fresh interpreter with an empty (first) or filled (cached) cache, so
import time is measured apart from load time.

    python bench/model_load.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from common import write_results

PROBE = """
import json, resource, time
started = time.perf_counter()
from rftt.models import load_model
imported = time.perf_counter()
model, tokenizer = load_model("smollm2-135m-instruct")
loaded = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "load_seconds": loaded - imported,
                  "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(cache: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, "RFTT_CACHE": cache})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        first = measure(cache)
        cached = [measure(cache) for _ in range(3)]
    best_cached = min(cached, key=lambda run: run["load_seconds"])
    figures = {
        "first_load_seconds": round(first["load_seconds"], 2),
        "cached_load_seconds": round(best_cached["load_seconds"], 2),
        "cached_load_seconds_all": [round(run["load_seconds"], 2) for run in cached],
        "first_to_cached_ratio": round(first["load_seconds"] / best_cached["load_seconds"], 1),
        "import_seconds": round(best_cached["import_seconds"], 2),
        "peak_memory_mib_first": round(first["peak_memory_mib"], 1),
        "peak_memory_mib_cached": round(best_cached["peak_memory_mib"], 1),
    }
    path = write_results("model_load", figures)
    print(f"{'load':<10}{'seconds':>9}{'peak MiB':>10}")
    print(f"{'first':<10}{figures['first_load_seconds']:>9}{figures['peak_memory_mib_first']:>10}")
    print(f"{'cached':<10}{figures['cached_load_seconds']:>9}{figures['peak_memory_mib_cached']:>10}")
    print(f"first/cached = {figures['first_to_cached_ratio']}x; import {figures['import_seconds']} s; written to {path}")


if __name__ == "__main__":
    main()
