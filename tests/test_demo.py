"""`rftt demo` end to end on a tiny model with the smallest budget: every stage, every artefact, and numbers
in the summary that agree with the per-problem files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pytest
import torch
import yaml

from rftt.cli import main
from rftt.config import ConfigError
from rftt.data import Problem
from rftt.demo import demo_config, run_demo, task_flags
from rftt.demo_problems import split_off_dev
from rftt.demo_settings import STAGES_FILE, paired_run
from rftt.evaluate import EvalConfig
from rftt.jsonl import read_records
from rftt.report import last_step_rollouts, write_report
from rftt.tokens import FUNCTIONAL_TOKENS_FILE

from conftest import TINY_CHAT_TEMPLATE, build_tiny_model, build_tiny_tokenizer, settings_before_grouping

ANSWER = "7"
TINY_BUDGET = [
    "held_out_problems=6", "dev_problems=3", "search_problems=3", "tree_problems=3", "example_trees=2",
    "search.search.rollouts=6", "search.search.max_depth=3", "search.step_max_tokens={output: 4, next_step: 4}",
    "sft.epochs=2", "sft.batch_size=4", "sft.learning_rate=1.0e-3", "sft.save_steps=1000",
    "rl.steps=2", "rl.prompts_per_step=2", "rl.rollout.samples_per_prompt=2", "rl.rollout.tree.step_max_tokens=4",
    "rl.rollout.search.rollouts=2", "rl.rollout.search.max_depth=3", "rl.mini_batch_size=4", "rl.micro_batch_size=4",
    "rl.eval_every=1", "rl.eval_max_new_tokens=8", "rl.save_every=1",
    "evaluation.max_new_tokens=8", "evaluation.tree_rollouts=[1, 2]",
]


def constant_answer_model(folder) -> str:
    """A tiny model taught to answer every chat prompt with `ANSWER` and stop, so searches find correct paths."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    model = build_tiny_model(len(tokenizer), seed=5)
    def chat(index: int) -> list[dict[str, str]]:  # bare questions and the prompted policy's multi-turn chats
        turns = [{"role": "system", "content": f"instruction {index}"}] if index % 2 else []
        for turn in range(index % 3):
            turns += [{"role": "user", "content": f"example {turn}"}, {"role": "assistant", "content": ANSWER}]
        return turns + [{"role": "user", "content": f"question {index} " * (index % 4 + 1)}]

    prompts = [tokenizer.apply_chat_template(chat(index), add_generation_prompt=True, tokenize=False)
               for index in range(24)]
    answer = tokenizer.encode(ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        for prompt in prompts:
            ids = tokenizer.encode(prompt, add_special_tokens=False)
            labels = torch.tensor([[-100] * len(ids) + answer])
            loss = model(input_ids=torch.tensor([ids + answer]), labels=labels).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def problem_file(path, indices: Sequence[int]) -> str:
    path.write_text("".join(json.dumps({"question": f"What is {index} + {7 - index}?", "answer": ANSWER}) + "\n"
                            for index in indices))
    return "{name: json, path: " + str(path) + "}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    model = constant_answer_model(folder / "model")
    task = problem_file(folder / "task.jsonl", [*range(-20, 20), -20])  # the last question repeats the first
    held_out = problem_file(folder / "held_out.jsonl", range(15, 30))  # 15-19 are training questions
    overrides = [*TINY_BUDGET, f"model={model}", f"task={task}", f"held_out={held_out}", f"output_dir={folder / 'run'}"]
    config = demo_config("small", overrides=overrides)
    return config, run_demo(config), folder / "run"


def test_every_stage_runs_and_every_artefact_exists(finished_run):
    _, summary, run = finished_run
    stages = json.loads((run / STAGES_FILE).read_text())
    assert list(stages) == ["calibration", "problems", "baseline", "search", "sft", "eval-sft", "rl", "eval-rl",
                            "eval-rl-tree"]
    assert all(stage["done"] and stage["seconds"] > 0 for stage in stages.values())
    for name in ("report.html", "summary.json", "plots/accuracy.png", "plots/rl.png", "plots/rollouts.png",
                 "problems/train.jsonl", "problems/dev.jsonl", "problems/held_out.jsonl", "sft/final/config.json",
                 "rl/final/config.json", "search/trees.jsonl"):
        assert (run / name).exists(), name
    for name in list(stages)[2:]:
        assert (run / name / "recipe.yaml").exists() and f"--config {run / name / 'recipe.yaml'}" in stages[name]["command"]
    assert not (run / "sft" / "checkpoints").exists() and not (run / "rl" / "checkpoints").exists()  # finished: final only
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and page.count("<iframe srcdoc=") == 2
    assert summary["search"]["correct_paths"] > 0, "the constant-answer model must give the warm-up some paths"
    assert [point["step"] for point in summary["rl_curve"]] == [-1, 0, 1]  # -1: the evaluation before training
    last_step = [record for record in read_records(run / "rl" / "rollouts.jsonl") if record["step"] == 1]
    shown = summary["rl_rollouts"]
    assert len(last_step) == 4 and sorted(row["response"] for row in shown) == sorted(r["response"] for r in last_step)
    assert all(row["gold"] == ANSWER and row["question"].startswith("What is") for row in shown)
    assert "What step 1 trained on" in page
    assert all("dev_accuracy" in point for point in summary["rl_curve"])


def test_the_budget_plans_every_stage_and_bounds_rl_by_the_time_left(finished_run):
    config, summary, run = finished_run
    stages = json.loads((run / STAGES_FILE).read_text())
    plan = stages["calibration"]["summary"]["plan"]
    assert plan["held_out_problems"] == 6 and plan["search_problems"] == 3  # a fast machine: the recipe's sizes
    assert all(summary["stages"][name]["planned_seconds"] > 0 for name in ("baseline", "search", "sft", "rl"))
    rl_recipe = yaml.safe_load((run / "rl" / "recipe.yaml").read_text())
    spent = sum(stages[name]["seconds"] for name in list(stages)[: list(stages).index("rl")])
    after_rl = sum(plan["seconds"][name] for name in ("eval-rl", "eval-rl-tree", "report"))
    planned = config.budget.minutes * 60 * (1 - config.budget.reserve)
    assert rl_recipe["max_minutes"] == pytest.approx((planned - spent - after_rl) / 60, abs=0.01)
    assert "planned" in (run / "report.html").read_text()


def test_accuracy_is_split_by_kind_of_problem(finished_run):
    _, summary, run = finished_run
    kinds = summary["by_kind"]
    assert set(kinds) == {"addition"}  # every question is "What is a + b?" with the answer 7
    assert kinds["addition"]["eval-rl"]["correct"] == summary["accuracy"]["eval-rl"]["correct"]
    overall, addition = summary["gains"]["eval-sft -> eval-rl"], kinds["addition"]["eval-sft -> eval-rl"]
    assert all(addition[key] == overall[key] for key in ("difference", "standard_error", "gained", "lost"))


def test_summary_numbers_agree_with_the_per_problem_files(finished_run):
    _, summary, run = finished_run
    assert json.loads((run / "summary.json").read_text())["accuracy"] == summary["accuracy"]
    for stage in ("baseline", "eval-sft", "eval-rl"):
        records = read_records(run / stage / "problems.jsonl")
        row = summary["accuracy"][stage]
        assert row["problems"] == len(records) == 6
        assert row["correct"] == sum(record["correct"] for record in records)
        assert row["extraction_rate"] == sum(record["answer"] is not None for record in records) / len(records)
    tree = read_records(run / "eval-rl-tree" / "problems.jsonl")
    for count in ("1", "2"):
        assert summary["accuracy"][f"tree-{count}"]["correct"] == sum(r["by_rollouts"][count]["correct"] for r in tree)
    correct = {stage: [record["correct"] for record in read_records(run / stage / "problems.jsonl")]
               for stage in ("baseline", "eval-sft", "eval-rl")}
    for before, after in (("baseline", "eval-sft"), ("eval-sft", "eval-rl")):
        gain = summary["gains"][f"{before} -> {after}"]
        assert gain["difference"] == pytest.approx((sum(correct[after]) - sum(correct[before])) / 6)
        assert gain["gained"] == sum(b > a for a, b in zip(correct[before], correct[after]))
    metrics = read_records(run / "rl" / "metrics.jsonl")
    assert [point.get("reward") for point in summary["rl_curve"]] == [record.get("reward") for record in metrics]


def test_the_report_shows_the_last_steps_groups_with_mixed_rewards_first(tmp_path):
    (tmp_path / "rl").mkdir()
    (tmp_path / "problems").mkdir()
    (tmp_path / "problems" / "train.jsonl").write_text("".join(
        json.dumps({"question": f"q{index}", "answer": str(index)}) + "\n" for index in range(3)))
    rows = [(0, 0, 1.0), (1, 0, 0.0), (1, 0, 0.0), (1, 1, 0.0), (1, 1, 1.0), (1, 2, 1.0), (1, 2, 0.0)]
    (tmp_path / "rl" / "rollouts.jsonl").write_text("".join(json.dumps(
        {"step": step, "group": group, "problem": f"train/{group}", "response": f"r{row}", "answer": None,
         "correct": False, "reward": reward, "advantage": 0.0, "moves": []}) + "\n"
        for row, (step, group, reward) in enumerate(rows)))
    shown = last_step_rollouts(tmp_path, 3)
    assert [(row["group"], row["response"], row["question"], row["gold"]) for row in shown] == [
        (1, "r3", "q1", "1"), (1, "r4", "q1", "1"), (2, "r5", "q2", "2")]  # step 1's uniform group 0 comes last
    assert last_step_rollouts(tmp_path, 0) == []


def test_held_out_problems_are_not_training_questions(finished_run):
    _, _, run = finished_run
    training = {record["question"] for name in ("train", "dev") for record in read_records(run / "problems" / f"{name}.jsonl")}
    held_out = read_records(run / "problems" / "held_out.jsonl")
    assert len(held_out) == 6 and not training & {record["question"] for record in held_out}
    assert held_out[0]["question"] == "What is 20 + -13?"
    assert json.loads((run / STAGES_FILE).read_text())["problems"]["summary"]["held_out_dropped_as_training_questions"] == 5


def test_dev_questions_are_not_training_questions(finished_run):
    _, _, run = finished_run
    train, dev = (read_records(run / "problems" / f"{name}.jsonl") for name in ("train", "dev"))
    assert len(dev) == 3 and not {record["question"] for record in train} & {record["question"] for record in dev}


def test_dev_is_the_last_problems_whose_question_occurs_once():
    questions = ["1 + 1", "2 + 2", "3 + 3", "1 + 1", "4 + 4", "2  +  2", "5 + 5"]
    task = [Problem(str(row), question, "0", "test") for row, question in enumerate(questions)]
    train, dev, kept_in_training = split_off_dev(task, 3)
    assert [problem.id for problem in dev] == ["2", "4", "6"]  # "2  +  2" repeats "2 + 2" once spaces are normalised
    assert [problem.id for problem in train] == ["0", "1", "3", "5"]
    assert kept_in_training == 2  # rows 3 and 5 lie among the dev rows but repeat training questions
    with pytest.raises(ConfigError, match="dev_problems: only 3 of the task's 7 questions occur once"):
        split_off_dev(task, 4)


def test_a_rerun_continues_without_redoing_finished_stages(finished_run):
    config, summary, run = finished_run
    before = json.loads((run / STAGES_FILE).read_text())
    again = run_demo(config)
    assert json.loads((run / STAGES_FILE).read_text()) == before
    assert again["accuracy"] == summary["accuracy"]
    assert len(read_records(run / "baseline" / "problems.jsonl")) == 6


def test_a_run_folder_refuses_other_settings(finished_run, capsys):
    _, _, run = finished_run
    assert main(["demo", "--budget", "small", "--output-dir", str(run), "--set", "rl.steps=5"]) == 2
    assert "different settings" in capsys.readouterr().err


def test_a_run_folder_from_an_older_version_or_given_by_a_relative_path_continues(finished_run, monkeypatch):
    config, summary, run = finished_run
    saved_path = run / "demo_config.json"
    saved = json.loads(saved_path.read_text())
    # settings added after the run began, at their default (the budget sets rl.rollout.tree itself), and the
    # evaluation's settings under the names they had before answer_check and tree grouped them
    del saved["functional_tokens"], saved["evaluation"]["answer_check"]["absolute_tolerance"]
    evaluation = saved["evaluation"] = settings_before_grouping(saved["evaluation"], EvalConfig.renamed_keys)
    assert evaluation["dtype"] == "native" and "tree_sampled_children" in evaluation
    saved_path.write_text(json.dumps(saved))
    monkeypatch.chdir(run.parent)
    relative = replace(config, model=Path(config.model).name, output_dir=run.name)
    assert run_demo(relative)["accuracy"] == summary["accuracy"]


def test_task_flag_uses_a_benchmarks_train_and_test_splits():
    flags = task_flags("gsm8k")
    assert flags["task"]["split"] == "train" and flags["held_out"]["split"] == "test"
    assert task_flags("reasoning_gym:chain_sum") == {"task": {"name": "reasoning_gym:chain_sum"},
                                                     "held_out": {"name": "reasoning_gym:chain_sum"}}


def test_the_ablation_keeps_the_tags_text_and_each_report_shows_the_pair(finished_run):
    config, _, run = finished_run
    ablation = replace(config, functional_tokens=False, output_dir=str(paired_run(run, True)))
    summary = run_demo(ablation)
    final = paired_run(run, True) / "sft" / "final"
    assert json.loads((final / FUNCTIONAL_TOKENS_FILE).read_text())["kind"] == "text"
    stages = json.loads((paired_run(run, True) / STAGES_FILE).read_text())
    assert stages["sft"]["summary"]["new_functional_tokens"] == 0
    assert summary["paired_run"]["run"] == str(run) and summary["paired_run"]["functional_tokens"] is True
    assert "Ablation: functional tokens against the same tags as plain text" in (
        paired_run(run, True) / "report.html").read_text()
    again = run_demo(config)
    assert again["paired_run"]["accuracy"]["eval-rl"]["accuracy"] == summary["accuracy"]["eval-rl"]["accuracy"]


def test_a_pair_run_with_other_settings_is_named_not_compared(finished_run, tmp_path):
    config, _, run = finished_run
    main_run, ablation = tmp_path / "run", paired_run(tmp_path / "run", True)
    for folder in (main_run, ablation):
        shutil.copytree(run, folder)
    saved = json.loads((ablation / "demo_config.json").read_text())
    saved.update(functional_tokens=False, tree_problems=saved["tree_problems"] + 1)
    (ablation / "demo_config.json").write_text(json.dumps(saved))
    stages = json.loads((main_run / STAGES_FILE).read_text())
    summary = write_report(main_run, replace(config, output_dir=str(main_run)), stages)
    assert summary["paired_run"]["other_settings"] == ["tree_problems"] and summary["paired_run"]["accuracy"] == {}
    assert "ran with other settings (tree_problems)" in (main_run / "report.html").read_text()


def test_the_ablation_flag_names_its_run_folder_after_the_main_run():
    from rftt.cli import build_parser, demo_flags

    flags = demo_flags(build_parser().parse_args(["demo", "--budget", "small", "--seed", "2", "--no-functional-tokens"]))
    assert flags == {"seed": 2, "output_dir": "runs/demo-small-seed2-no-functional-tokens", "functional_tokens": False}
    main_run = demo_flags(build_parser().parse_args(["demo", "--budget", "small", "--seed", "2"]))["output_dir"]
    assert paired_run(Path(main_run), True) == Path(flags["output_dir"])


def test_the_minutes_flag_sets_the_budget_and_zero_runs_the_recipes_sizes():
    from rftt.cli import build_parser, demo_flags

    def budget(*arguments: str):
        return demo_config(flags=demo_flags(build_parser().parse_args(["demo", *arguments]))).budget.minutes

    assert budget() == 25 and budget("--minutes", "12.5") == 12.5 and budget("--minutes", "0") is None


def test_a_run_from_another_takes_its_finished_stages_up_to_the_first_changed_one(finished_run, tmp_path):
    config, summary, run = finished_run
    variant = tmp_path / "variant"
    source_recipes = {name: (run / name / "recipe.yaml").read_text() for name in ("sft", "rl")}
    variant_summary = run_demo(replace(config, output_dir=str(variant), rl=replace(config.rl, steps=1),
                                       keep_resume_checkpoints=True), from_run=str(run))
    stages = json.loads((variant / STAGES_FILE).read_text())
    copied = [name for name, record in stages.items() if record.get("reused_from") == str(run)]
    assert copied == ["calibration", "problems", "baseline", "search", "sft", "eval-sft"]
    assert all(stages[name]["done"] for name in ("rl", "eval-rl", "eval-rl-tree"))
    assert stages["rl"]["summary"]["steps_run"] == 1 and len(read_records(variant / "rl" / "metrics.jsonl")) == 2
    assert list((variant / "rl" / "checkpoints").iterdir()), "keep_resume_checkpoints: the RL run's are kept"
    assert variant_summary["accuracy"]["eval-sft"] == summary["accuracy"]["eval-sft"]
    assert f"copied from {run}" in (variant / "report.html").read_text()
    assert {name: (run / name / "recipe.yaml").read_text() for name in ("sft", "rl")} == source_recipes  # copies, not links


def test_from_run_refuses_a_folder_without_a_demo_run(finished_run, tmp_path):
    from rftt.cli import build_parser

    assert build_parser().parse_args(["demo", "--from-run", "runs/demo"]).from_run == "runs/demo"
    config, _, _ = finished_run
    with pytest.raises(ConfigError, match="holds no demo run"):
        run_demo(replace(config, output_dir=str(tmp_path / "variant")), from_run=str(tmp_path))


def test_a_run_from_one_recorded_before_the_settings_groups_takes_its_finished_stages(finished_run, tmp_path):
    from rftt.search.runner import SearchRunConfig
    from rftt.train.rollouts import RolloutConfig

    config, _, run = finished_run
    source = tmp_path / "before-groups"
    shutil.copytree(run, source)
    for stage in ("baseline", "eval-sft"):
        recipe = source / stage / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(settings_before_grouping(yaml.safe_load(recipe.read_text()), EvalConfig.renamed_keys,
                                                    {"tree_temperature": 0.1})))  # the old default, unread by greedy
    search = source / "search" / "recipe.yaml"
    search.write_text(yaml.safe_dump(settings_before_grouping(yaml.safe_load(search.read_text()),
                                                          SearchRunConfig.renamed_keys)))
    rl = yaml.safe_load((source / "rl" / "recipe.yaml").read_text())
    rl["rollout"] = settings_before_grouping(rl["rollout"], RolloutConfig.renamed_keys, {"step_max_tokens": 128})
    (source / "rl" / "recipe.yaml").write_text(yaml.safe_dump(rl))
    reused = {}
    for name, origin in (("from-today", run), ("from-before", source)):
        run_demo(replace(config, output_dir=str(tmp_path / name)), from_run=str(origin))
        stages = json.loads((tmp_path / name / STAGES_FILE).read_text())
        reused[name] = [stage for stage, record in stages.items() if record.get("reused_from") == str(origin)]
    assert reused["from-before"] == reused["from-today"] and "eval-sft" in reused["from-today"]
