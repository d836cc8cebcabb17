"""SFT warm-up on a tiny model: masking, packing, tokens, loss, LoRA, bad data, exact resume, two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from rftt.config import ConfigError, load_config
from rftt.data import DataError
from rftt.models import RFTT_CONFIG_FILE, load_model, recorded_step_tags
from rftt.tokens import FunctionalTokens, Move, Step, TextTags, render_steps
from rftt.train.sft import FINAL_FOLDER, LOG_FILE, SFTConfig, run_sft
from rftt.train.sft_data import (
    IGNORE_INDEX,
    DataReport,
    SFTCollator,
    SFTDataConfig,
    SFTExample,
    load_examples,
    pack,
    tokenize,
)
from rftt.train.weights import FINGERPRINT_FOLDER

from conftest import TINY_CHAT_TEMPLATE, build_tiny_model, build_tiny_tokenizer, run_and_kill_after_lines, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-chat-checkpoint"), seed=7, chat_template=TINY_CHAT_TEMPLATE)


def search_record(index: int) -> dict:
    steps = [{"move": "next_step", "content": f"{index} + 1 = {index + 1}", "value": 1.0},
             {"move": "output", "content": f"\\boxed{{{index + 1}}}", "value": 1.0}]
    return {"id": f"p{index}/correct/0", "problem_id": f"p{index}", "question": f"What is {index} + 1?",
            "answer": str(index + 1), "kind": "correct", "steps": steps}


def write_sft_file(path, count: int, extra: list | None = None) -> str:
    rows = [search_record(index) for index in range(count)] + (extra or [])
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def sft_config(checkpoint, data: str, output, *overrides: str) -> SFTConfig:
    """A small SFT run on the CPU (the figures these tests compare are the CPU's; `device=auto` overrides it)."""
    base = {"model": str(checkpoint), "output_dir": str(output), "report_to": [], "batch_size": 4,
            "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 4, "device": "cpu",
            "data": {"path": data, "max_length": 64, "dev_fraction": 0.2}}
    return load_config(SFTConfig, overrides=list(overrides), base=base)


def test_labels_mask_the_prompt_exactly():
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = SFTDataConfig(style="cot", template="reft", max_length=200)
    example = SFTExample("a", "What is 2 + 3?", "2 + 3 = 5\nTherefore, the answer is: 5", "a")
    [row] = tokenize([example], tokenizer, config, DataReport())
    prompt = tokenizer.encode("Question:\nWhat is 2 + 3?\nAnswer reasoning:\n", add_special_tokens=False)
    assert row.input_ids[: len(prompt)] == prompt
    assert row.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert row.labels[len(prompt) :] == row.input_ids[len(prompt) :]
    assert row.input_ids[-1] == tokenizer.eos_token_id


def test_overlong_examples_are_truncated_or_dropped_and_counted():
    tokenizer = build_tiny_tokenizer()
    long = SFTExample("long", "q", "the answer is 42 " * 40, "long")
    short = SFTExample("short", "q", "42", "short")
    report = DataReport()
    rows = tokenize([long, short], tokenizer, SFTDataConfig(template="plain", max_length=30), report)
    assert len(rows) == 1 and report.dropped_overlong == 1
    report = DataReport()
    rows = tokenize([long, short], tokenizer, SFTDataConfig(template="plain", max_length=30, overlong="truncate"), report)
    assert [len(row.input_ids) for row in rows][0] == 30 and report.truncated == 1


def test_packed_rows_give_the_same_loss_as_separate_rows():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=1).eval()
    examples = [SFTExample(str(i), f"What is {i}?", f"the answer is {i}", str(i)) for i in range(3)]
    rows = tokenize(examples, tokenizer, SFTDataConfig(template="plain", max_length=200), DataReport())
    collator = SFTCollator(tokenizer.pad_token_id)
    [packed] = pack(rows, 200)
    assert len(packed) == 3
    with torch.no_grad():
        separate = model(**collator(rows)).loss
        together = model(**collator([packed])).loss
    torch.testing.assert_close(together, separate)


def test_a_run_on_the_auto_device_records_the_device_it_ran_on(tmp_path, checkpoint):
    from rftt.precision import resolve_device

    run_sft(sft_config(checkpoint, write_sft_file(tmp_path / "sft.jsonl", 8), tmp_path / "run", "max_steps=1",
                       "device=auto"))
    record = json.loads((tmp_path / "run" / FINAL_FOLDER / RFTT_CONFIG_FILE).read_text())
    assert record["config"]["device"] == str(resolve_device("auto"))


@pytest.mark.parametrize("stored, computes", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
def test_auto_precision_trains_as_the_checkpoint_is_stored_and_the_run_records_it(tmp_path, checkpoint, stored,
                                                                                  computes):
    from transformers import AutoModelForCausalLM

    start = tmp_path / "start"
    shutil.copytree(checkpoint, start)
    AutoModelForCausalLM.from_pretrained(checkpoint).to(stored).save_pretrained(start)
    run_sft(sft_config(start, write_sft_file(tmp_path / "sft.jsonl", 8), tmp_path / "run", "max_steps=1"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == computes
    assert json.loads((tmp_path / "run" / FINAL_FOLDER / RFTT_CONFIG_FILE).read_text())["config"]["precision"] == computes


def test_training_lowers_the_loss_and_keeps_functional_tokens(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "sft.jsonl", 12)
    summary = run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=30", "learning_rate=0.003"))
    logs = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    assert losses[-1] < losses[0] * 0.8, losses
    assert summary["steps"] == 30 and summary["new_functional_tokens"] == 16 and "dev_loss" in summary
    model, tokenizer = load_model(str(tmp_path / "run" / FINAL_FOLDER))
    tokens = FunctionalTokens.from_tokenizer(tokenizer)
    for tag in ("<next_step>", "</output>"):
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1
    trace = render_steps([Step(Move.NEXT_STEP, "1 + 1 = 2"), Step(Move.OUTPUT, "\\boxed{2}")])
    assert tokens.parse_token_ids(tokenizer.encode(trace, add_special_tokens=False), tokenizer)[1].move is Move.OUTPUT
    assert (tmp_path / "run" / "tensorboard").exists() or summary


def test_lora_checkpoint_reloads_merged_with_the_trained_behaviour(tmp_path, checkpoint):
    from rftt.train.sft import split_dev
    from rftt.train.sft_data import load_examples

    data = write_sft_file(tmp_path / "sft.jsonl", 8)
    config = sft_config(checkpoint, data, tmp_path / "lora", "max_steps=12", "lora.rank=4", "learning_rate=0.01",
                        "data.dev_fraction=0.5")
    summary = run_sft(config)
    final = tmp_path / "lora" / FINAL_FOLDER
    assert (final / "adapter_config.json").exists() and not (final / "model.safetensors").exists()
    merged, tokenizer = load_model(str(final))
    _, dev = split_dev(load_examples(config.data, DataReport()), 0.5, 200)
    batch = SFTCollator(tokenizer.pad_token_id)(tokenize(dev, tokenizer, config.data, DataReport()))
    with torch.no_grad():
        assert merged(**batch).loss.item() == pytest.approx(summary["dev_loss"], abs=1e-3)
    base, _ = load_model(str(checkpoint))
    assert summary["dev_loss"] < 0.95 * _base_loss(base, tokenizer, batch)


def _base_loss(base, tokenizer, batch) -> float:
    from rftt.tokens import add_functional_tokens

    add_functional_tokens(base, tokenizer.__class__.from_pretrained(str(base.name_or_path)))
    with torch.no_grad():
        return base(**batch).loss.item()


def test_bad_records_are_named_or_skipped_and_counted(tmp_path, checkpoint):
    no_response = {"id": "x", "problem_id": "x", "question": "q", "kind": "correct", "steps": []}
    unknown = dict(search_record(99), steps=[{"move": "analysis", "content": "hm"}])
    data = write_sft_file(tmp_path / "bad.jsonl", 8, [no_response, unknown])
    with pytest.raises(DataError, match=r"bad.jsonl line 9: field 'steps': missing or empty"):
        run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=1"))
    data = write_sft_file(tmp_path / "bad2.jsonl", 8, [unknown])
    with pytest.raises(DataError, match=r"line 9: field 'steps\[0\].move': unknown functional token 'analysis'"):
        run_sft(sft_config(checkpoint, data, tmp_path / "run2", "max_steps=1"))
    summary = run_sft(sft_config(checkpoint, write_sft_file(tmp_path / "bad3.jsonl", 8, [no_response, unknown]),
                                 tmp_path / "skip", "max_steps=1", "data.skip_bad=true"))
    assert summary["skipped"] == 2 and summary["examples"] == 8


def test_a_folder_is_not_continued_with_other_settings(tmp_path, checkpoint):
    from rftt.config import ConfigError

    data = write_sft_file(tmp_path / "sft.jsonl", 8)
    run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=1"))
    run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=2", "resume=true"))  # more steps: continued
    with pytest.raises(ConfigError, match=r"different settings \(learning_rate: 0.001 recorded, 0.5 now\)"):
        run_sft(sft_config(checkpoint, data, tmp_path / "run", "learning_rate=0.5", "resume=true"))


def test_a_finished_warm_up_whose_checkpoints_were_deleted_is_not_resumed_from_scratch(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "sft.jsonl", 8)
    run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=1"))
    shutil.rmtree(tmp_path / "run" / "checkpoints", ignore_errors=True)  # as the demo does once the stage is done
    with pytest.raises(ConfigError, match="a finished run with no checkpoint to resume from"):
        run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=2", "resume=true"))


def test_a_time_budget_stops_training_early_with_a_checkpoint(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "data.jsonl", 16)
    summary = run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=50", "max_minutes=0"))
    assert summary["steps"] == 1
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-1").is_dir()
    assert (tmp_path / "run" / FINAL_FOLDER / "model.safetensors").is_file()


def _final_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / FINAL_FOLDER / "model.safetensors"))


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "sft.jsonl", 24)
    common = ["--data", data, "--model", str(checkpoint), "--max-steps", "40", "--learning-rate", "0.001",
              "--set", "report_to=[]", "--set", "save_steps=4", "--set", "batch_size=2", "--set", "data.max_length=64",
              "--set", "lora=null", "--device", "cpu"]  # compared to 1e-6: the CPU's figures
    whole = subprocess.run([sys.executable, "-m", "rftt.cli", "sft", *common, "--output-dir", str(tmp_path / "whole")],
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = [sys.executable, "-m", "rftt.cli", "sft", *common, "--output-dir", str(tmp_path / "killed")]
    run_and_kill_after_lines(killed, tmp_path / "killed" / LOG_FILE, 6)
    assert not (tmp_path / "killed" / FINAL_FOLDER).exists()
    resumed = subprocess.run([*killed, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoint-" in resumed.stdout
    expected, got = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)


def test_two_processes_train_the_same_weights(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "sft.jsonl", 16)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "rftt.cli", "sft", "--data", data, "--model", str(checkpoint), "--max-steps", "4",
               "--output-dir", str(tmp_path / "ddp"), "--set", "report_to=[]", "--set", "batch_size=2",
               "--device", "cpu"]  # two gloo ranks on the CPU
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    prints = [json.loads((tmp_path / "ddp" / FINGERPRINT_FOLDER / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert prints[0]["weight_sum"] == prints[1]["weight_sum"]
    assert (tmp_path / "ddp" / FINAL_FOLDER / "model.safetensors").exists()


@pytest.mark.parametrize("tied", [True, False])
def test_new_token_rows_take_larger_steps_and_nothing_else_changes(tied):
    from rftt.train.sft import LargerStepsForNewRows

    tokenizer = build_tiny_tokenizer()
    models = [build_tiny_model(len(tokenizer), tied=tied, seed=4) for _ in range(2)]
    new_rows = [5, 9]
    ids = torch.tensor([[1, 5, 2, 9, 3]])
    for model, factor in zip(models, (1.0, 3.0)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(input_ids=ids, labels=ids).loss.backward()
        callback = LargerStepsForNewRows(new_rows, factor)
        callback.on_pre_optimizer_step(None, None, None, model=model)
        optimizer.step()
        callback.on_optimizer_step(None, None, None, model=model)
    start = build_tiny_model(len(tokenizer), tied=tied, seed=4)
    plain, boosted = models
    for name, parameter in boosted.named_parameters():
        reference, original = dict(plain.named_parameters())[name], dict(start.named_parameters())[name]
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            torch.testing.assert_close(parameter[new_rows] - original[new_rows],
                                       3.0 * (reference[new_rows] - original[new_rows]))
            others = [row for row in range(parameter.shape[0]) if row not in new_rows]
            torch.testing.assert_close(parameter[others], reference[others])
        else:
            torch.testing.assert_close(parameter, reference)


def test_without_functional_tokens_the_tags_stay_text_encoded_tag_by_tag(tmp_path, checkpoint):
    data = write_sft_file(tmp_path / "sft.jsonl", 6)
    summary = run_sft(sft_config(checkpoint, data, tmp_path / "run", "max_steps=2", "functional_tokens=false"))
    base_tokenizer = load_model(str(checkpoint))[1]
    _, tokenizer = load_model(str(tmp_path / "run" / FINAL_FOLDER))
    assert summary["new_functional_tokens"] == 0 and len(tokenizer) == len(base_tokenizer)
    tags = recorded_step_tags(str(tmp_path / "run" / FINAL_FOLDER), tokenizer)
    assert isinstance(tags, TextTags)
    example = SFTExample("p", "What is 1 + 1?", "<next_step>1 + 1 = 2.</next_step><output>\\boxed{2}</output>", "p")
    row = tokenize([example], tokenizer, SFTDataConfig(max_length=256), DataReport(),
                   lambda text: tags.encode_trace(text, tokenizer))[0]
    response = [label for label in row.labels if label != IGNORE_INDEX]
    assert response == tags.encode_trace(example.response, tokenizer) + [tokenizer.eos_token_id]
    assert [span.move for span in tags.step_spans(response)] == [Move.NEXT_STEP, Move.OUTPUT]


def test_keeping_tags_text_is_refused_for_a_model_that_has_them_as_tokens(tmp_path):
    from rftt.tokens import FunctionalTokenError, add_functional_tokens

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    model = build_tiny_model(len(tokenizer), seed=3)
    add_functional_tokens(model, tokenizer)
    model.save_pretrained(tmp_path / "with-tokens")
    tokenizer.save_pretrained(tmp_path / "with-tokens")
    data = write_sft_file(tmp_path / "sft.jsonl", 4)
    with pytest.raises(FunctionalTokenError, match="config.functional_tokens"):
        run_sft(sft_config(tmp_path / "with-tokens", data, tmp_path / "run", "max_steps=1", "functional_tokens=false"))


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(tmp_path):
    from rftt.train.sft import last_complete_checkpoint

    for step, complete in ((10, True), (20, True), (30, False)):  # the save of step 30 died on a full disk
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "optimizer.pt").write_bytes(b"partial")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-20")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def eval_record(index: int, completions: list[str], correct: list[bool]) -> dict:
    """A problem's line of an `rftt eval --method maj@k` problems.jsonl."""
    return {"id": f"p{index}", "question": f"Calculate {index} + 1.", "prompt": "...", "gold": str(index + 1),
            "completions": completions, "sample_correct": correct}


def test_a_sampled_warm_up_learns_distinct_correct_samples_with_a_box(tmp_path):
    path = tmp_path / "problems.jsonl"
    records = [eval_record(1, ["1 + 1 = 2. \\boxed{2}", "1 + 1 = 2. \\boxed{2}", "1 + 1 = 2", "3", "\\boxed{2} again",
                               "Put it in \\boxed{ }: 2"], [True, True, True, False, True, True]),
               eval_record(2, ["2 + 1 = 4 \\boxed{4}", "no"], [False, False])]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    config = SFTDataConfig(source="samples", style="sampled", path=str(path), samples_per_problem=2)
    report = DataReport()
    examples = load_examples(config, report)
    assert [(example.question, example.response, example.group) for example in examples] == [
        ("Calculate 1 + 1.", "1 + 1 = 2. \\boxed{2}", "p1"), ("Calculate 1 + 1.", "1 + 1 = 2 \\boxed{2}", "p1")]
    assert report.examples == 2 and config.template_name() == "chat_steps"
    wide = load_examples(SFTDataConfig(source="samples", style="sampled", path=str(path), samples_per_problem=5),
                         DataReport())
    assert [example.response for example in wide][-2:] == ["\\boxed{2} again", "Put it in \\boxed{ }: 2 \\boxed{2}"]


def test_sampled_records_that_are_not_eval_records_are_named(tmp_path):
    path = tmp_path / "problems.jsonl"
    bad = {"id": "p3", "question": "q", "gold": "1", "completions": ["a", "b"], "sample_correct": [True]}
    path.write_text(json.dumps(eval_record(1, ["\\boxed{2}"], [True])) + "\n" + json.dumps(bad) + "\n")
    config = SFTDataConfig(source="samples", style="sampled", path=str(path))
    with pytest.raises(DataError, match=r"problems.jsonl line 2: field 'completions': expected the lists"):
        load_examples(config, DataReport())
    report = DataReport()
    assert len(load_examples(replace(config, skip_bad=True), report)) == 1 and len(report.skipped) == 1
    with pytest.raises(ConfigError, match="config.data.style"):
        SFTDataConfig(source="samples", style="cot", path=str(path))
    with pytest.raises(DataError, match="field 'data.path': missing: name an `rftt eval` problems.jsonl"):
        load_examples(SFTDataConfig(source="samples", style="sampled"), DataReport())


def test_an_eval_runs_samples_become_a_warm_up(tmp_path, checkpoint):
    from rftt.evaluate import EvalConfig, evaluate

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"question": f"Calculate {i} + 1.", "answer": str(i + 1)}) + "\n"
                                for i in range(3)))
    evaluate(load_config(EvalConfig, overrides=[
        f"model={checkpoint}", "dataset={name: json, path: " + str(problems) + "}", "method=maj@2",
        "template=chat_steps", "max_new_tokens=6", f"output_dir={tmp_path / 'sample'}"]), progress=False)
    samples = tmp_path / "sample" / "problems.jsonl"
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(dict(record, sample_correct=[True, False])) + "\n" for record in records))
    summary = run_sft(sft_config(checkpoint, str(samples), tmp_path / "run", "max_steps=1", "data.source=samples",
                                 "data.style=sampled", "data.max_length=256", "functional_tokens=false"))
    assert summary["examples"] == 3 and summary["steps"] == 1
