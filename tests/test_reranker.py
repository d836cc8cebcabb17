"""The reranker: trained on labelled samples it separates right from wrong, is reloadable, and `rerank@k` uses it."""

from __future__ import annotations

import json

import pytest

from rftt.config import ConfigError, load_config
from rftt.evaluate import EvalConfig, evaluate
from rftt.jsonl import read_records
from rftt.train.reranker import RerankerConfig, load_reranker, rerank, score, train_reranker
from rftt.verify.judge import AnswerCheckConfig
from rftt.voting import majority_vote

from conftest import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-policy"), seed=4)


def write_eval_run(path) -> str:
    """Records shaped like `rftt eval` output: right samples say 'verify', wrong ones 'clarify'."""
    records = []
    for index in range(12):
        completions = [f"verify the answer is {index}", f"clarify the step {index + 1}"]
        records.append({"id": f"p{index}", "prompt": f"What is {index}? ", "gold": str(index),
                        "completions": completions, "sample_correct": [True, False]})
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_rerank_picks_the_best_scored_sample_with_an_answer():
    assert rerank(["5", None, "7"], [0.2, 0.9, 0.6]) == 2
    assert rerank([None, None], [0.5, 0.6]) is None


def test_a_trained_reranker_separates_right_from_wrong_and_reloads(tmp_path, checkpoint):
    data = write_eval_run(tmp_path / "problems.jsonl")
    summary = train_reranker(RerankerConfig(model=str(checkpoint), data=data, learning_rate=3e-3, epochs=6,
                                            batch_size=4, output_dir=str(tmp_path / "reranker")))
    assert summary["samples"] == 24 and summary["correct"] == 12
    model, tokenizer = load_reranker(str(tmp_path / "reranker" / "final"))
    right, wrong = score(model, tokenizer, ["What is 20? verify the answer is 20", "What is 20? clarify the step 21"])
    assert right > 0.5 > wrong
    assert rerank(["21", "20"], [wrong, right]) == 1


def test_reranker_needs_both_kinds_of_samples(tmp_path, checkpoint):
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "q", "gold": "1", "completions": ["x"],
                                "sample_correct": [True]}) + "\n")
    with pytest.raises(ValueError, match="both correct and wrong"):
        train_reranker(RerankerConfig(model=str(checkpoint), data=str(path), output_dir=str(tmp_path / "r")))


def test_rerank_at_k_in_eval(tmp_path, checkpoint):
    data = write_eval_run(tmp_path / "train.jsonl")
    train_reranker(RerankerConfig(model=str(checkpoint), data=data, epochs=1, output_dir=str(tmp_path / "reranker")))
    problems = tmp_path / "test.jsonl"
    problems.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    base = {"model": str(checkpoint), "template": "plain", "method": "rerank@3", "max_new_tokens": 32,
            "answer_check": {"last_number_fallback": True},
            "reranker": str(tmp_path / "reranker" / "final"), "output_dir": str(tmp_path / "eval"),
            "dataset": {"name": "json", "path": str(problems)}}
    summary = evaluate(load_config(EvalConfig, base=base), progress=False)
    records = read_records(tmp_path / "eval" / "problems.jsonl")
    assert any(record["answer"] is not None for record in records)  # else the check below checks nothing
    assert summary["majority_accuracy"] == sum(record["majority_correct"] for record in records) / len(records)
    for record in records:
        assert record["majority_answer"] == majority_vote(record["extracted"], record["sample_correct"]).answer
        assert len(record["reranker_scores"]) == 3 and len(record["completions"]) == 3
        if record["answer"] is not None:
            chosen = record["reranker_scores"].index(max(score for score, answer in zip(
                record["reranker_scores"], record["extracted"]) if answer is not None))
            assert record["answer"] == record["extracted"][chosen]
    with pytest.raises(ConfigError, match="rerank@k needs a trained reranker"):
        EvalConfig(method="rerank@4").samples()
    with pytest.raises(ConfigError, match="answer_check.absolute_tolerance: tree search judges answers exactly"):
        EvalConfig(method="tree", answer_check=AnswerCheckConfig(absolute_tolerance=0.01)).samples()
