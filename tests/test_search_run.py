"""`rftt search` end to end (and killed and resumed), the tree viewer, tree evaluation, process reward models."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import torch

from rftt.cli import main
from rftt.config import load_config
from rftt.evaluate import EvalConfig, evaluate
from rftt.jsonl import read_records
from rftt.search.process_rewards import HFProcessRewardModel, HTTPProcessRewardModel
from rftt.search.runner import SFT_FILE, TREES_FILE, SearchRunConfig, run_search
from rftt.search.tree import Tree
from rftt.search.viewer import render_tree_page, write_tree_page
from rftt.tokens import Move

from conftest import (
    TINY_CHAT_TEMPLATE,
    build_tiny_model,
    build_tiny_tokenizer,
    run_and_kill_after_lines,
    running_server,
    save_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-chat-checkpoint"), seed=5, chat_template=TINY_CHAT_TEMPLATE)


def write_problems(path, count: int) -> str:
    rows = [{"question": f"What is {index} + 1?", "answer": str(index + 1), "key": f"p{index}"} for index in range(count)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


SMALL_SEARCH = ["search.rollouts=3", "search.max_depth=4", "greedy_max_tokens=8", "export.verify_max_tokens=4"]


def search_config(checkpoint, data: str, output, *overrides: str) -> SearchRunConfig:
    base = {"model": str(checkpoint), "output_dir": str(output), "problems_per_group": 2,
            "dataset": {"name": "json", "path": data, "fields": {"id": "key"}}}
    return load_config(SearchRunConfig, overrides=[*SMALL_SEARCH, *overrides], base=base)


def test_search_run_writes_trees_training_data_and_a_summary(tmp_path, checkpoint):
    config = search_config(checkpoint, write_problems(tmp_path / "data.jsonl", 3), tmp_path / "run")
    summary = run_search(config, progress=False)
    trees = read_records(tmp_path / "run" / TREES_FILE)
    assert [record["tree"]["problem_id"] for record in trees] == ["p0", "p1", "p2"]
    assert all(Tree.from_json(record["tree"]).rollouts == 3 for record in trees)
    assert summary["problems"] == 3 and summary["nodes"] > 0 and summary["nodes_per_second"] > 0
    assert 0 <= summary["solved_by_search"] <= 3 and 0 <= summary["solved_by_greedy"] <= 3
    for record in trees:  # each tree's own count (a group's average share summed to 83083.99999999987 once)
        tree = Tree.from_json(record["tree"])
        assert record["generated_tokens"] == sum(node.generated_tokens for node in tree.nodes) > 0
    assert isinstance(summary["generated_tokens"], int)
    for record in read_records(tmp_path / "run" / SFT_FILE):
        assert record["kind"] in ("correct", "reflection") and record["text"].endswith("</output>")


def test_killed_search_resumes_without_redoing_or_losing_a_tree(tmp_path, checkpoint):
    data = write_problems(tmp_path / "data.jsonl", 12)
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "rftt.cli", "search", "json", "--path", data, "--model", str(checkpoint),
               "--output-dir", str(output), "--rollouts", "3", "--set", "dataset.fields={id: key}",
               "--set", "problems_per_group=1", "--set", "search.max_depth=4", "--set", "greedy_max_tokens=8"]
    trees_file = output / TREES_FILE
    run_and_kill_after_lines(command, trees_file, 3)
    kept = {record["tree"]["problem_id"]: record for record in read_records(trees_file)}
    assert 3 <= len(kept) < 12

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trees = read_records(trees_file)
    ids = [record["tree"]["problem_id"] for record in trees]
    assert sorted(ids, key=lambda key: int(key[1:])) == [f"p{index}" for index in range(12)]
    for problem_id, record in kept.items():
        assert trees[ids.index(problem_id)] == record
    sft_ids = [record["id"] for record in read_records(output / SFT_FILE)]
    assert len(sft_ids) == len(set(sft_ids))
    assert "solved_by_search" in resumed.stdout


def test_viewer_page_holds_the_tree(tmp_path, checkpoint, capsys):
    config = search_config(checkpoint, write_problems(tmp_path / "data.jsonl", 1), tmp_path / "run")
    run_search(config, progress=False)
    # Through the command line: its RUN argument once collided with the command dispatch.
    assert main(["view", str(tmp_path / "run"), "--problem", "p0", "--output", str(tmp_path / "tree.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tree.html")
    html = (tmp_path / "tree.html").read_text()
    assert write_tree_page(tmp_path / "run", "p0").read_text() == html
    tree = Tree.from_json(read_records(tmp_path / "run" / TREES_FILE)[0]["tree"])
    assert html.startswith("<!DOCTYPE html>") and "What is 0 + 1?" in html
    assert json.dumps(tree.to_json()).replace("</", "<\\/") in html
    assert "http://" not in html and "https://" not in html
    hostile = Tree("x", "</script><script>alert(1)</script>", "1")
    assert "</script><script>alert(1)" not in render_tree_page(hostile)


def test_tree_evaluation_reports_accuracy_by_rollouts(tmp_path, checkpoint):
    base = {"model": str(checkpoint), "method": "tree", "template": "functional", "max_new_tokens": 5,
            "tree_rollouts": [1, 2], "output_dir": str(tmp_path / "tree-eval"), "search": {"max_depth": 4},
            "dataset": {"name": "json", "path": write_problems(tmp_path / "data.jsonl", 3), "fields": {"id": "key"}}}
    summary = evaluate(load_config(EvalConfig, base=base), progress=False)
    assert set(summary["accuracy_by_rollouts"]) == {"1", "2"}
    records = read_records(tmp_path / "tree-eval" / "problems.jsonl")
    assert all(len(record["completions"]) == 2 and set(record["by_rollouts"]) == {"1", "2"} for record in records)
    assert json.loads((tmp_path / "tree-eval" / "config.json").read_text())["search"]["rollouts"] == 2  # not 16


def test_tree_evaluation_steps_keep_within_their_own_token_limit(tmp_path, checkpoint):
    from rftt.tokens import parse_steps

    base = {"model": str(checkpoint), "method": "tree", "template": "functional", "max_new_tokens": 8,
            "tree": {"step_max_tokens": 2, "temperature": 1.0}, "tree_rollouts": [2],
            "output_dir": str(tmp_path / "tree-eval"), "search": {"max_depth": 4},
            "dataset": {"name": "json", "path": write_problems(tmp_path / "data.jsonl", 2), "fields": {"id": "key"}}}
    evaluate(load_config(EvalConfig, base=base), progress=False)
    records = read_records(tmp_path / "tree-eval" / "problems.jsonl")
    for record in records:  # each step: an opening token, at most 2 written tokens, a closing token
        for completion, tokens in zip(record["completions"], record["completion_tokens"]):
            assert 0 < tokens <= 4 * len(parse_steps(completion))


def test_hf_process_reward_model_places_one_score_per_step():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=2).eval()
    prm = HFProcessRewardModel(model, tokenizer, step_tag="\n", good_token="+", bad_token="-")
    ids, positions = prm.encode("What is 1 + 1?", ["1 + 1 = 2", "the answer is 2"])
    assert [ids[position] for position in positions] == [prm.tag_id, prm.tag_id]
    [scores] = prm.score_steps([("What is 1 + 1?", ["1 + 1 = 2", "the answer is 2"])])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    expected = torch.softmax(logits[positions][:, prm.label_ids], dim=-1)[:, 0]
    torch.testing.assert_close(torch.tensor(scores), expected)
    batch = prm.score_steps([("q", ["a"]), ("What is 1 + 1?", ["1 + 1 = 2", "the answer is 2"])])
    assert len(batch[0]) == 1 and batch[1] == pytest.approx(scores, abs=1e-5)


def test_process_rewards_over_http_from_rftt_serve_prm(checkpoint):
    with running_server("--prm", checkpoint, "--prm-step-tag", " step", "--prm-good-token", " answer",
                        "--prm-bad-token", " is", "--device", "cpu") as url:  # compared with the CPU to 1e-5
        items = [("What is 1 + 1?", ["1 + 1 = 2", "the answer is 2"])]
        remote = HTTPProcessRewardModel(url).score_steps(items)
        from rftt.models import load_model

        model, tokenizer = load_model(str(checkpoint))
        local = HFProcessRewardModel(model.eval(), tokenizer, " step", " answer", " is").score_steps(items)
        assert remote[0] == pytest.approx(local[0], abs=1e-5)
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "hi"}).status_code == 404


def test_recipe_examples_become_worked_example_turns_and_bad_ones_are_named():
    from rftt.config import ConfigError
    from rftt.search.policies import MoveExample
    from rftt.search.runner import move_examples

    examples = move_examples({"next_step": [{"question": "Calculate 1 + 2.", "steps": [["analyze", "Add them."]],
                                             "content": "1 + 2 = 3."}]})
    assert examples == {Move.NEXT_STEP: (MoveExample("Calculate 1 + 2.", ((Move.ANALYZE, "Add them."),), "1 + 2 = 3."),)}
    with pytest.raises(ConfigError, match="config.examples.next_step: each example needs"):
        move_examples({"next_step": [{"question": "q"}]})
    with pytest.raises(ConfigError, match="unknown move 'analyse'"):
        move_examples({"next_step": [{"question": "q", "content": "c", "steps": [["analyse", "x"]]}]})


def test_a_search_folder_is_not_continued_with_other_settings(tmp_path):
    from rftt.config import ConfigError, to_dict
    from rftt.run_folder import claim_run_folder
    from rftt.search.runner import SEARCH_RUN_FOLDER, SearchRunConfig, run_search

    first = SearchRunConfig(output_dir=str(tmp_path / "search"), candidates=2, device="cpu")
    claim_run_folder(tmp_path / "search", SearchRunConfig, to_dict(first), SEARCH_RUN_FOLDER)
    with pytest.raises(ConfigError, match=r"different settings \(candidates: 2 recorded, 3 now\)"):  # refused before anything loads
        run_search(SearchRunConfig(output_dir=str(tmp_path / "search"), candidates=3, device="cpu"))


def test_answer_checking_search_cannot_honour_is_refused_before_the_folder_records_it(tmp_path):
    from rftt.config import ConfigError
    from rftt.search.runner import SearchRunConfig, run_search
    from rftt.verify.judge import AnswerCheckConfig

    config = SearchRunConfig(output_dir=str(tmp_path / "search"), device="cpu",
                             answer_check=AnswerCheckConfig(absolute_tolerance=0.01))
    with pytest.raises(ConfigError, match="config.answer_check.absolute_tolerance: tree search judges answers exactly"):
        run_search(config)
    assert not (tmp_path / "search" / "config.json").exists()  # so the corrected run is not refused
