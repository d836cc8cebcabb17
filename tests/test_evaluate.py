"""`rftt eval` on a tiny model and a small data file: records, summary, voting, and resume after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rftt.config import ConfigError, load_config
from rftt.data import DatasetSpec, Problem
from rftt.engine import make_engine
from rftt.evaluate import PROBLEMS_FILE, SUMMARY_FILE, EvalConfig, evaluate
from rftt.precision import resolve_device
from rftt.prompts import TemplateError, get_template
from rftt.voting import answer_key, majority_vote

from conftest import TINY_CHAT_TEMPLATE, build_tiny_tokenizer, run_and_kill_after_lines, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), seed=3)


def write_problems(path, count: int) -> str:
    rows = [{"question": f"What is {index} + {index}?", "answer": str(2 * index), "key": f"p{index}"}
            for index in range(count)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def eval_config(tmp_path, checkpoint, data: str, **settings) -> EvalConfig:
    base = {"model": str(checkpoint), "template": "reft", "max_new_tokens": 12, "batch_size": 3,
            "output_dir": str(tmp_path / "run"),
            "dataset": {"name": "json", "path": data, "fields": {"id": "key"}}}
    return load_config(EvalConfig, base={**base, **settings})


def read_records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / PROBLEMS_FILE).read_text().splitlines()]


def test_greedy_eval_writes_records_and_a_summary(tmp_path, checkpoint):
    config = eval_config(tmp_path, checkpoint, write_problems(tmp_path / "data.jsonl", 7))
    summary = evaluate(config, progress=False)
    records = read_records(tmp_path / "run")
    assert [record["id"] for record in records] == [f"p{index}" for index in range(7)]
    assert all(len(record["completions"]) == 1 and record["prompt"].startswith("Question:\n") for record in records)
    assert summary["problems"] == 7 and 0.0 <= summary["accuracy"] <= 1.0
    assert summary["accuracy"] == sum(record["correct"] for record in records) / 7
    assert json.loads((tmp_path / "run" / SUMMARY_FILE).read_text()) == summary
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["device"] == str(resolve_device("auto"))  # where `auto` ran: the GPU when there is one


def test_majority_vote_eval_samples_k_per_problem(tmp_path, checkpoint):
    config = eval_config(tmp_path, checkpoint, write_problems(tmp_path / "data.jsonl", 4), method="maj@5",
                         temperature=1.0)
    summary = evaluate(config, progress=False)
    for record in read_records(tmp_path / "run"):
        assert len(record["completions"]) == len(record["sample_correct"]) == 5
        if record["answer"] is not None:
            assert record["votes"] >= 1
    assert summary["method"] == "maj@5" and summary["pass_at_k"] >= summary["accuracy"]


def test_resume_after_a_half_written_line_equals_an_uninterrupted_run(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 8)
    whole = eval_config(tmp_path, checkpoint, data, output_dir=str(tmp_path / "whole"))
    evaluate(whole, progress=False)
    cut = eval_config(tmp_path, checkpoint, data, output_dir=str(tmp_path / "cut"))
    (tmp_path / "cut").mkdir()
    lines = (tmp_path / "whole" / PROBLEMS_FILE).read_text().splitlines(keepends=True)
    (tmp_path / "cut" / PROBLEMS_FILE).write_text("".join(lines[:3]) + lines[3][:20])
    evaluate(cut, progress=False)
    strip = lambda records: [{k: v for k, v in r.items() if k != "generation_seconds"} for r in records]  # noqa: E731
    assert strip(read_records(tmp_path / "cut")) == strip(read_records(tmp_path / "whole"))


def test_rftt_eval_killed_half_way_resumes_and_skips_finished_problems(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 60)
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "rftt.cli", "eval", "json", "--path", data, "--model", str(checkpoint),
               "--template", "reft", "--max-new-tokens", "48", "--output-dir", str(output),
               "--set", "dataset.fields={id: key}", "--set", "batch_size=1", "--set", "engine.max_batch_rows=1"]
    records_file = output / PROBLEMS_FILE
    run_and_kill_after_lines(command, records_file, 5)
    done_before = len(read_records(output))
    assert 5 <= done_before < 60

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ids = [record["id"] for record in read_records(output)]
    assert sorted(ids, key=lambda key: int(key[1:])) == [f"p{index}" for index in range(60)]
    assert len(set(ids)) == 60
    assert "accuracy" in resumed.stdout and "problems                  60" in resumed.stdout


def test_resuming_with_different_settings_is_refused(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 2)
    evaluate(eval_config(tmp_path, checkpoint, data), progress=False)
    with pytest.raises(ConfigError, match="different settings \\(max_new_tokens: 12 recorded, 5 now\\)"):
        evaluate(eval_config(tmp_path, checkpoint, data, max_new_tokens=5), progress=False)


def test_a_run_grows_or_shrinks_its_problem_count_without_redoing_finished_problems(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 6)
    limited = {"name": "json", "path": data, "fields": {"id": "key"}}
    evaluate(eval_config(tmp_path, checkpoint, data, dataset={**limited, "limit": 2}), progress=False)
    first = read_records(tmp_path / "run")
    summary = evaluate(eval_config(tmp_path, checkpoint, data, dataset={**limited, "limit": 4}), progress=False)
    records = read_records(tmp_path / "run")
    assert records[:2] == first and [record["id"] for record in records] == ["p0", "p1", "p2", "p3"]
    assert summary["problems"] == 4
    summary = evaluate(eval_config(tmp_path, checkpoint, data, dataset={**limited, "limit": 1}), progress=False)
    assert summary["problems"] == 1 and summary["accuracy"] == float(records[0]["correct"])
    assert len(read_records(tmp_path / "run")) == 4


def test_a_run_resumes_when_its_data_and_model_are_named_by_another_path(tmp_path, checkpoint, monkeypatch):
    data = write_problems(tmp_path / "data.jsonl", 2)
    evaluate(eval_config(tmp_path, checkpoint, data), progress=False)
    monkeypatch.chdir(tmp_path)
    relative = eval_config(tmp_path, os.path.relpath(checkpoint, tmp_path), "data.jsonl")
    assert evaluate(relative, progress=False)["problems"] == 2
    with pytest.raises(ConfigError, match="different settings \\(dataset.path: .*data.jsonl' recorded, .*other.jsonl' now\\)"):
        evaluate(eval_config(tmp_path, checkpoint, write_problems(tmp_path / "other.jsonl", 2)), progress=False)


def test_a_run_written_before_a_setting_existed_resumes_when_the_setting_keeps_its_default(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 2)
    evaluate(eval_config(tmp_path, checkpoint, data), progress=False)
    saved = tmp_path / "run" / "config.json"
    older = json.loads(saved.read_text())
    del older["answer_check"]["absolute_tolerance"], older["dataset"]["offset"]
    saved.write_text(json.dumps(older))
    evaluate(eval_config(tmp_path, checkpoint, data), progress=False)
    saved.write_text(json.dumps(older))
    with pytest.raises(ConfigError, match="different settings \\(answer_check.absolute_tolerance: 0.0 recorded, 0.01 now\\)"):
        evaluate(eval_config(tmp_path, checkpoint, data, answer_check={"absolute_tolerance": 0.01}), progress=False)


def test_eval_through_a_given_engine_and_problem_list(tmp_path, tiny_model, tiny_tokenizer):
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=tiny_tokenizer)
    problems = [Problem("a", "1+1?", "2", "test"), Problem("b", "2+2?", "4", "test")]
    config = EvalConfig(template="plain", max_new_tokens=4, output_dir=str(tmp_path / "given"),
                        dataset=DatasetSpec(name="json", path="unused"))
    summary = evaluate(config, engine=engine, tokenizer=tiny_tokenizer, problems=problems, progress=False)
    assert summary["problems"] == 2


def test_bad_method_and_unknown_settings_are_named():
    with pytest.raises(ConfigError, match="config.method: 'majority' is not 'greedy', 'tree', 'maj@k' or 'rerank@k'"):
        EvalConfig(method="majority").sampling_params()
    with pytest.raises(ConfigError, match="config.temprature: unknown key"):
        load_config(EvalConfig, overrides=["temprature=0.5"])
    with pytest.raises(ConfigError, match="config.engine.kind: 'tgi' is not one of"):
        load_config(EvalConfig, overrides=["engine.kind=tgi"])
    with pytest.raises(ConfigError, match="config.max_new_tokens: expected int"):
        load_config(EvalConfig, overrides=["max_new_tokens=lots"])


def test_recipe_file_and_overrides(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("method: maj@4\ndataset:\n  name: gsm8k\n  split: test\n  limit: 200\n")
    config = load_config(EvalConfig, recipe, ["dataset.limit=50", "engine.kind=openai"])
    assert (config.method, config.dataset.name, config.dataset.limit, config.engine.kind) == ("maj@4", "gsm8k", 50, "openai")
    recipe.write_text("dataset:\n  nmae: gsm8k\n")
    with pytest.raises(ConfigError, match=f"{recipe}.dataset.nmae: unknown key"):
        load_config(EvalConfig, recipe)


def test_templates():
    tokenizer = build_tiny_tokenizer()
    assert get_template("reft").render("What is 2+2?", tokenizer) == "Question:\nWhat is 2+2?\nAnswer reasoning:\n"
    with pytest.raises(TemplateError, match="needs a chat template"):
        get_template("chat").render("q", tokenizer)
    with pytest.raises(TemplateError, match="unknown prompt template 'cot'"):
        get_template("cot")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    assert get_template("chat_steps").render("Calculate 4 - 1.", tokenizer) == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Calculate 4 - 1.\nSolve the problem step by step, then put the final answer in "
                                     "\\boxed{}."}], add_generation_prompt=True, tokenize=False)


def test_majority_vote_counts_equivalent_answers_together():
    vote = majority_vote(["0.5", "1/2", "3", "\\frac{1}{2}", None, "3"], [True, True, False, True, False, False])
    assert (vote.answer, vote.votes, vote.correct) == ("0.5", 3, True)
    tie = majority_vote(["7", "8", "8", "7"], [False, True, True, False])
    assert tie.answer == "7" and tie.correct is False
    assert majority_vote([None, None], [False, False]).answer is None
    assert answer_key("1,000") == answer_key("1000.0") != answer_key("1001")
    assert answer_key("Yes") == answer_key(" yes ")
