"""Where and in what precision stages compute, one setting of each name for every stage. Device: `auto` (the GPU
when there is one, else the CPU), `cpu`, `cuda` or `cuda:N`. Precision: `auto` (as the checkpoint is stored),
`fp32`, `bf16`, `fp16` (generation only) or `native` (bf16 where the device computes it natively, fp32 where bf16
would be emulated and slower).

Generation stages (evaluation, search, serving) load the weights in their precision. Training stages keep fp32
weights and optimizer state and run their forward passes under bf16 autocast when their precision resolves to
bf16 (mixed precision). README.md ("Precision") has the speed-ups measured on a CPU with AVX512-BF16.
"""

from __future__ import annotations

import os
import platform
import re
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import ContextManager, Literal, get_args

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16", "native"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
"""The values of `dtype`, the setting `precision` replaced in evaluation and search, as precisions."""
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPU_INFO = Path("/proc/cpuinfo")
AUTO_DEVICE = "auto"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(?::\d+)?")
NATIVE_BF16_SWITCH = "RFTT_NATIVE_BF16"
"""Set to 0 to treat this CPU as one without bf16 instructions: `native` then resolves to fp32 everywhere."""


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); read from /proc/cpuinfo, so False off Linux,
    and False when the environment sets RFTT_NATIVE_BF16=0 (to measure what a CPU without them would do)."""
    if os.environ.get(NATIVE_BF16_SWITCH, "1").strip() == "0":
        return False
    if platform.system() != "Linux" or not CPU_INFO.is_file():
        return False
    for line in CPU_INFO.read_text().splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def device_problem(name: object) -> str | None:
    """What is wrong with a device setting (its form, or a GPU this machine lacks), for an error naming the
    setting; None when it can be used."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        return f"{name!r} is not one of auto, cpu, cuda, cuda:N"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"{name!r}: this machine has no CUDA GPU (use auto or cpu)"
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"{name!r}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0"
    return None


def resolve_device(name: str = AUTO_DEVICE) -> torch.device:
    """The device a stage computes on: `auto` is the GPU when there is one, else the CPU; `cpu`, `cuda` and
    `cuda:N` are taken as named (a GPU this machine lacks is a ValueError saying so)."""
    problem = device_problem(name)
    if problem:
        raise ValueError(problem)
    if name == AUTO_DEVICE:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def select_device(device: torch.device) -> None:
    """Make `device` the current GPU, so libraries that place work on "the" GPU (accelerate) use it."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def native_bf16(device: torch.device | str) -> bool:
    """Whether bf16 is fast on `device`: a CUDA GPU that supports it, or a CPU with bf16 instructions."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def _checked(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def weights_dtype(precision: str, device: torch.device | str) -> torch.dtype | str:
    """The dtype a generation stage loads the weights in: `auto` keeps the checkpoint's, `native` is bf16 where
    bf16 is fast on `device`, else fp32. The torch names (`float32`, ...) are taken too."""
    precision = _checked(DTYPE_NAMES.get(precision, precision))
    if precision == "auto":
        return "auto"
    if precision == "native":
        precision = "bf16" if native_bf16(device) else "fp32"
    return _TORCH_DTYPES[precision]


def training_precision(precision: str, stored_dtype: torch.dtype | None) -> str:
    """What a training stage computes in: `auto` is bf16 when the checkpoint is stored in bf16 (`stored_dtype`),
    else fp32; fp16 is refused, as training would need a loss scaler for it."""
    if _checked(precision) == "fp16":
        raise ValueError("precision 'fp16' is for generation; training computes in fp32 or mixed bf16 (fp16 would "
                         "need a loss scaler): use bf16, native, auto or fp32")
    if precision == "auto":
        return "bf16" if stored_dtype == torch.bfloat16 else "fp32"
    return precision


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    """Whether a training stage computing in `precision` (resolved by `training_precision`) runs its forward
    passes in bf16 on `device`."""
    if training_precision(precision, None) != precision:
        raise ValueError(f"precision {precision!r} depends on the checkpoint: resolve it with training_precision first")
    return precision == "bf16" or (precision == "native" and native_bf16(device))


def autocast(precision: str, device: torch.device | str) -> ContextManager:
    """The context in which training forward passes run: bf16 autocast when `precision` resolves to bf16, else
    nothing."""
    if not uses_bf16(precision, device):
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
