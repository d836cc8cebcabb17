"""Shared fixtures: a tiny byte-level BPE tokenizer and a tiny random Llama, built offline here; a real `rftt serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    "clarify the question and what is asked",
    "analyze the problem then take the next step",
    "subquestion: what is the total? direct answer: the answer is 42",
    "verify the previous steps, refine and correct them, then output the final answer",
    "end of the step. Natalia sold 48 clips in April and half as many in May.",
    "12 + 35 = 47. So the answer is \\boxed{47}.",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with end-of-sequence and padding tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def build_tiny_model(vocabulary_size: int, *, tied: bool = True, padded_rows: int = 0, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights; `padded_rows` spare embedding rows beyond the vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocabulary_size + padded_rows, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_tiny_model(len(tiny_tokenizer))


def write_tiny_gguf(path, tokenizer: PreTrainedTokenizerFast, *, hidden: int = 16, feed_forward: int = 32) -> None:
    """A one-layer Llama GGUF with random float32 weights and `tokenizer`'s BPE vocabulary and merges."""
    import json

    import gguf
    import numpy as np

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [token for token, _ in sorted(state["model"]["vocab"].items(), key=lambda item: item[1])]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in state["model"]["merges"]]
    special = set(tokenizer.all_special_tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    generator = np.random.default_rng(0)

    def random(*shape: int) -> np.ndarray:
        return (generator.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", random(len(tokens), hidden))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", random(hidden, hidden))
    writer.add_tensor("blk.0.ffn_gate.weight", random(feed_forward, hidden))
    writer.add_tensor("blk.0.ffn_up.weight", random(feed_forward, hidden))
    writer.add_tensor("blk.0.ffn_down.weight", random(hidden, feed_forward))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def run_and_kill_after_lines(command: list[str], watched, lines: int, timeout: float = 180.0) -> None:
    """Start `command`, SIGKILL it once `watched` has `lines` complete lines (a half-written last one does not
    count: readers drop it), and check that it really was killed."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if watched.exists() and watched.read_text().count("\n") >= lines:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the job finished before it could be killed"


TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")


def save_tiny_checkpoint(folder, *, seed: int, chat_template: str | None = None):
    """A tiny random model and its tokenizer saved as a checkpoint folder (optionally with a chat template)."""
    tokenizer = build_tiny_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    build_tiny_model(len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(*arguments: str):
    """`rftt serve ARGUMENTS` on a free loopback port for the duration of the block; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rftt.cli", "serve", *map(str, arguments), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"rftt serve exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def settings_before_grouping(settings: dict, renamed: dict[str, str], old_defaults: dict | None = None) -> dict:
    """A config's settings as a version before the settings groups wrote them: each renamed setting under its old
    name (`renamed`: a config class's `renamed_keys`), no group sections, and the old defaults given."""
    old = json.loads(json.dumps(settings))
    for old_name, new in renamed.items():
        group, _, name = new.rpartition(".")
        section = old.get(group, {}) if group else old
        if name in section:
            old[old_name] = section.pop(name)
    for group in {new.rpartition(".")[0] for new in renamed.values()} - {""}:
        old.pop(group, None)
    return old | (old_defaults or {})
