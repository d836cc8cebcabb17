"""The `rftt` command line: sub-commands run in-process, errors come out as one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rftt.cli import main


def test_data_prints_problems_as_json_lines(capsys):
    assert main(["data", "arithmetic", "--size", "5", "--seed", "2", "--show", "2"]) == 0
    output = capsys.readouterr()
    lines = output.out.strip().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["id"] == "basic_arithmetic/2/0"
    assert "5 problems, 0 malformed rows skipped" in output.err


def test_data_reports_skipped_rows(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "no answer"}\n')
    assert main(["data", "json", "--path", str(path), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "1 problems, 1 malformed rows skipped" in err and "line 2: field 'answer': missing" in err


def test_bad_input_is_one_line_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "no answer"}\n')
    assert main(["data", "json", "--path", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"rftt data: {path} line 1: field 'answer': missing"


def test_verify_exit_status_follows_the_verdict(capsys):
    assert main(["verify", "so the answer is \\boxed{\\frac{1}{2}}", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out) == {"correct": True, "extracted": "\\frac{1}{2}", "reason": "equal"}
    assert main(["verify", "I think 3", "4"]) == 1
    assert main(["verify", "I think 3", "3", "--no-last-number"]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["reason"] == "no_answer"
    assert main(["verify", "def solution():\n    return 29 * 7\n", "203", "--program"]) == 0
    assert json.loads(capsys.readouterr().out)["extracted"] == "203"
    assert main(["verify", "def solution():\n    return 0.3333 / 2\n", "0.165", "--program"]) == 1
    assert main(["verify", "def solution():\n    return 0.3333 / 2\n", "0.165", "--program", "--tolerance", "0.01"]) == 0
    assert main(["verify", "so 7", "We add them. The answer is 7", "--gold-format", "latex"]) == 0
    with pytest.raises(SystemExit):
        main(["verify", "so 7", "7", "--gold-format", "tex"])
    assert "invalid choice: 'tex'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "search", "sft", "rl", "train-reranker"])
def test_every_job_takes_a_device_and_names_a_bad_one(command, tmp_path, capsys):
    assert main([command, "--device", "gpu0", "--output-dir", str(tmp_path / command)]) == 2
    assert "config.device: 'gpu0' is not one of auto, cpu, cuda, cuda:N" in capsys.readouterr().err


def test_a_reranker_without_its_samples_file_is_told_which_file(tmp_path, capsys):
    assert main(["train-reranker", "--data", str(tmp_path / "none.jsonl"), "--output-dir", str(tmp_path / "run")]) == 2
    assert f"{tmp_path / 'none.jsonl'}: no such file" in capsys.readouterr().err


def test_the_installed_command_runs():
    result = subprocess.run([sys.executable, "-m", "rftt.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("data", "verify", "model", "tokens", "demo"):
        assert command in result.stdout
