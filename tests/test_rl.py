"""`rftt rl` on a tiny model: every recipe for 3 steps, rewards to tokens, exact resume, two processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rftt.config import ConfigError, load_config
from rftt.data import DatasetSpec, load_problems
from rftt.rewards import RewardConfig, outcome_reward, token_rewards
from rftt.tokens import add_functional_tokens
from rftt.train.experience import Experience
from rftt.train.metrics_log import LOG_FILE, ROLLOUT_FILE, TENSORBOARD_FOLDER, scalars
from rftt.train.rl import RLConfig, RLTrainer, problems_for_step, run_rl
from rftt.train.rl_model import ResponseForward, build_sequences, forward_responses
from rftt.train.rl_steps import step_fits_budget
from rftt.train.weights import FINGERPRINT_FOLDER
from rftt.verify import Outcome

from conftest import TINY_CHAT_TEMPLATE, build_tiny_model, build_tiny_tokenizer, run_and_kill_after_lines

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = ["steps=3", "dev=null", "rollout.samples_per_prompt=2", "rollout.max_new_tokens=8", "rollout.tree.step_max_tokens=4",
         "rollout.search.max_depth=3", "rollout.search.rollouts=2", "prompts_per_step=2", "mini_batch_size=4",
         "micro_batch_size=2", "save_every=0", "eval_every=0", "learning_rate=1.0e-4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-policy")
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    model = build_tiny_model(len(tokenizer), seed=11)
    tokens = add_functional_tokens(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    from rftt.tokens import save_step_tags

    save_step_tags(folder, tokens)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(8)))
    return str(path)


def recipe_config(name: str, checkpoint, data: str, output, *overrides: str) -> RLConfig:
    return load_config(RLConfig, RECIPES / name, [*SMALL, f"model={checkpoint}", f"output_dir={output}",
                                                   "dataset={name: json, path: " + data + "}", *overrides])


@pytest.mark.parametrize("recipe", ["rftt_arithmetic.yaml", "reft_gsm8k.yaml", "reft_svamp_program.yaml", "grpo_arithmetic.yaml"])
def test_each_recipe_runs_three_steps_with_finite_losses(tmp_path, checkpoint, data, recipe):
    history = run_rl(recipe_config(recipe, checkpoint, data, tmp_path / "run"))
    assert [metrics["step"] for metrics in history] == [0, 1, 2]
    for metrics in history:
        assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["kl"])
        assert set(metrics["seconds"]) >= {"rollout", "reward", "logprobs", "advantages", "update"}
        if "value_loss" in metrics:
            assert math.isfinite(metrics["value_loss"])
    logged = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert len(logged) == 3 and (tmp_path / "run" / "final" / "config.json").exists()
    assert [step for step, _ in tensorboard_scalars(tmp_path / "run", "seconds/update")] == [1, 2, 3]
    if recipe.startswith("rftt"):
        assert sum(logged[0]["moves"].values()) > 0


def test_tree_rollouts_from_a_text_tag_checkpoint_keep_the_tags_text(tmp_path, data):
    from rftt.tokens import FUNCTIONAL_TOKENS_FILE, TextTags, save_step_tags

    folder = tmp_path / "text-tag-policy"
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    build_tiny_model(len(tokenizer), seed=11).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_step_tags(folder, TextTags.from_tokenizer(tokenizer))
    config = recipe_config("rftt_arithmetic.yaml", folder, data, tmp_path / "run", "steps=2",
                           "rollout.tree.step_max_tokens=6")
    trainer = RLTrainer(config)
    assert isinstance(trainer.tokens, TextTags)
    history = trainer.fit()
    assert all(math.isfinite(metrics["policy_loss"]) for metrics in history)
    assert sum(history[0]["moves"].values()) > 0
    final = tmp_path / "run" / "final"
    assert json.loads((final / FUNCTIONAL_TOKENS_FILE).read_text())["kind"] == "text"
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(final)) == len(tokenizer)


def test_the_starting_model_is_evaluated_before_the_first_step(tmp_path, checkpoint, data):
    dev = "dev={name: json, path: " + data + "}"
    config = recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "run", dev, "eval_every=2",
                           "steps=2", "eval_max_new_tokens=4")
    trainer = RLTrainer(config)
    before = trainer.evaluate(trainer.dev_problems)
    trainer.fit()
    logged = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [record["step"] for record in logged] == [-1, 0, 1]
    assert logged[0]["dev_accuracy"] == before and "dev_accuracy" in logged[2] and "dev_accuracy" not in logged[1]


def test_skipping_the_old_forward_gives_the_same_update(tmp_path, checkpoint, data):
    updated = []
    for name, skip in (("computed", False), ("reused", True)):
        trainer = RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / name, "steps=1"))
        assert trainer.old_policy_is_current(4)  # GRPO: one update on the whole batch, KL in the loss
        trainer.old_policy_is_current = lambda rows, skip=skip: skip
        metrics = trainer.train_step(0)
        updated.append((metrics, [parameter.detach().clone() for parameter in trainer.policy.parameters()]))
    (computed, computed_weights), (reused, reused_weights) = updated
    assert reused["kl"] == pytest.approx(computed["kl"], abs=1e-6)
    assert reused["policy_loss"] == pytest.approx(computed["policy_loss"], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(computed_weights, reused_weights))
    assert any(not torch.equal(a, b) for a, b in zip(computed_weights, RLTrainer(
        recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "start")).policy.parameters()))


def test_the_old_forward_is_kept_where_the_update_cannot_supply_it(tmp_path, checkpoint, data):
    for number, (recipe, overrides) in enumerate((("rftt_arithmetic.yaml", []), ("reft_gsm8k.yaml", []),
                                                  ("grpo_arithmetic.yaml", ["ppo_epochs=2"]),
                                                  ("grpo_arithmetic.yaml", ["mini_batch_size=2"]))):
        trainer = RLTrainer(recipe_config(recipe, checkpoint, data, tmp_path / str(number), *overrides))
        assert not trainer.old_policy_is_current(4), (recipe, overrides)


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_resumed_from_scratch(tmp_path, checkpoint, data):
    import shutil

    from rftt.config import ConfigError

    run = tmp_path / "run"
    run_rl(recipe_config("grpo_arithmetic.yaml", checkpoint, data, run, "steps=1", "save_every=1"))
    trained = (run / "final" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "checkpoints")  # as the demo does once the stage is done
    with pytest.raises(ConfigError, match="a finished run with no checkpoint to resume from"):
        RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, run, "steps=2", "save_every=1", "resume=true"))
    assert (run / "final" / "model.safetensors").read_bytes() == trained


def test_an_rl_folder_is_not_continued_with_other_settings(tmp_path, checkpoint, data):
    from rftt.config import ConfigError

    RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "run"))
    RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "run", "steps=9", "resume=true"))
    with pytest.raises(ConfigError, match=r"different settings \(clip: 0.2 recorded, 0.5 now\)"):
        RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "run", "clip=0.5"))


@pytest.mark.parametrize("precision, computed", [("fp32", {torch.float32}), ("bf16", {torch.bfloat16})])
def test_a_step_computes_in_its_precision_and_keeps_fp32_weights(tmp_path, checkpoint, data, precision, computed):
    trainer = RLTrainer(recipe_config("rftt_arithmetic.yaml", checkpoint, data, tmp_path / "run", "steps=1",
                                      f"precision={precision}"))
    start = [parameter.detach().clone() for parameter in trainer.policy.parameters()]
    seen: set[torch.dtype] = set()
    trainer.policy.lm_head.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    metrics = trainer.train_step(0)
    assert seen == computed  # rollouts, old log-probs and the update all ran in it
    assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["kl"])
    assert all(parameter.dtype == torch.float32 for parameter in trainer.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.policy.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("recipe", ["rftt_arithmetic.yaml", "reft_gsm8k.yaml", "grpo_arithmetic.yaml"])
def test_a_step_runs_with_the_policy_on_the_gpu(tmp_path, checkpoint, data, recipe):
    trainer = RLTrainer(recipe_config(recipe, checkpoint, data, tmp_path / "run", "steps=1", "device=cuda"))
    devices = {parameter.device.type for parameter in trainer.policy.parameters()}
    if trainer.reference is not None and trainer.reference.copy is not None:  # the KL's forward passes too
        devices |= {parameter.device.type for parameter in trainer.reference.copy.parameters()}
    assert devices == {"cuda"}
    metrics = trainer.train_step(0)
    assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["kl"])


def test_rewards_land_on_the_last_token_and_on_step_ends():
    config = RewardConfig(correct=1.0, wrong_answer=0.1, no_answer=0.0, process_rewards=True)
    assert [outcome_reward(Outcome(*item), config) for item in
            [(True, "5", "equal"), (False, "6", "not_equal"), (False, None, "no_answer")]] == [1.0, 0.1, 0.0]
    rewards = token_rewards([5, 3], [1.0, 0.0], 6, step_ends=[[1, 4], [0]], step_scores=[[0.5, 0.9], [0.2]],
                            config=config)
    # sample 0: step 1 score on token 1; its last step ends on the last token, which gets .6 * 1 + .4 * .9
    assert rewards[0].tolist() == pytest.approx([0, 0.5, 0, 0, 0.6 + 0.36, 0])
    assert rewards[1].tolist() == pytest.approx([0.2, 0, 0.6 * 0 + 0.4 * 0.2, 0, 0, 0])
    plain = token_rewards([2], [1.0], 3)
    assert plain.tolist() == [[0.0, 1.0, 0.0]]


def test_response_logprobs_match_a_plain_forward_pass(checkpoint):
    from rftt.models import load_model

    model, _ = load_model(str(checkpoint))
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
    batch = build_sequences(prompts, responses, pad_id=1)
    with torch.no_grad():
        got = forward_responses(model, batch).logprobs
        for row, (prompt, response) in enumerate(zip(prompts, responses)):
            logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).squeeze(1)
            torch.testing.assert_close(got[row, -len(response):], expected, atol=1e-5, rtol=1e-5)
    assert batch.response_mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_chunks_of_similar_length_give_the_full_batchs_logprobs_and_gradient(checkpoint):
    """Rows of a chunk are trimmed to their own longest sequence and response; the numbers must not change."""
    from rftt.models import load_model
    from rftt.train.rl_model import by_length, forward_in_chunks, micro_batch_share

    model, _ = load_model(str(checkpoint), dtype=torch.float32)
    prompts = [[5, 6, 7], [8, 9], [5, 6, 7, 8, 9, 10, 11], [12]]
    responses = [[20, 21], [22, 23, 24, 25, 26, 27], [28], [29, 30, 31]]
    batch = build_sequences(prompts, responses, pad_id=1)
    with torch.no_grad():
        whole = forward_responses(model, batch).logprobs
    torch.testing.assert_close(forward_in_chunks(model, batch, by_length(batch, torch.arange(4), 2)).logprobs, whole,
                               atol=1e-5, rtol=1e-5)
    chunks = by_length(batch, torch.arange(4), 2)
    assert [chunk.tolist() for chunk in chunks] == [[3, 0], [1, 2]]
    short = batch.rows(chunks[0])
    assert short.input_ids.shape == (2, 5) and short.width == 3

    def gradient(losses) -> torch.Tensor:
        model.zero_grad()
        sum(losses).backward()
        return model.get_input_embeddings().weight.grad.clone()

    mask = batch.response_mask
    full = gradient([(forward_responses(model, batch).logprobs * mask).sum() / mask.sum()])
    parts = []
    for chunk in chunks:
        rows = batch.rows(chunk)
        share = micro_batch_share(mask, chunk, torch.arange(4), "token_mean")
        parts.append((forward_responses(model, rows).logprobs * rows.response_mask).sum() / rows.response_mask.sum() * share)
    torch.testing.assert_close(gradient(parts), full, atol=1e-6, rtol=1e-4)


def test_data_order_is_fixed_by_seed_and_step(data):
    from rftt.data import load_problems

    problems = list(load_problems("json", path=data))
    first = [problem.id for problem in problems_for_step(problems, 3, 4, seed=1)]
    assert first == [problem.id for problem in problems_for_step(problems, 3, 4, seed=1)]
    epoch = [problem.id for step in (0, 1) for problem in problems_for_step(problems, step, 4, seed=1)]
    assert sorted(epoch) == sorted(problem.id for problem in problems)


def test_an_oversampled_rollout_keeps_the_groups_with_mixed_rewards_first():
    from rftt.train.rollouts import TrajectoryBatch, keep_informative_groups

    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    rewards = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # groups 1 and 3 are informative
    batch = TrajectoryBatch([[row] for row in range(8)], [[10 + row] for row in range(8)], groups,
                            [Outcome(reward == 1.0, None, "x") for reward in rewards], [[]] * 8, [[]] * 8, [[]] * 8,
                            [f"problem-{group}" for group in groups])
    kept = keep_informative_groups(batch, rewards, 2)
    assert kept.prompt_ids == [[2], [3], [6], [7]] and kept.groups == [0, 0, 1, 1]
    assert kept.problem_ids == ["problem-1", "problem-1", "problem-3", "problem-3"]
    assert (kept.rolled_out_groups, kept.informative_groups, kept.rolled_out_accuracy) == (4, 2, 0.5)
    filled = keep_informative_groups(batch, rewards, 3)  # one uniform group fills the third place, order kept
    assert filled.prompt_ids == [[0], [1], [2], [3], [6], [7]] and filled.groups == [0, 0, 1, 1, 2, 2]
    everything = keep_informative_groups(batch, rewards, 4)
    assert everything.prompt_ids == batch.prompt_ids and everything.groups == groups


def test_oversampled_tree_rollouts_train_on_the_steps_number_of_prompts(tmp_path, checkpoint, data):
    history = run_rl(recipe_config("rftt_arithmetic.yaml", checkpoint, data, tmp_path / "run", "rollout.oversample=2",
                                   "rollout.tree.sampled_children=2", "steps=1"))
    informative = history[0]["informative_rolled_out_groups"] * 4  # of the 2 x 2 prompts rolled out
    assert informative == pytest.approx(round(informative)) and 0 <= informative <= 4
    assert 0.0 <= history[0]["rolled_out_accuracy"] <= 1.0 and math.isfinite(history[0]["policy_loss"])
    with pytest.raises(ConfigError, match="rollout.oversample: must be at least 1"):
        run_rl(recipe_config("rftt_arithmetic.yaml", checkpoint, data, tmp_path / "x", "rollout.oversample=0"))


def test_incompatible_settings_are_named(tmp_path, checkpoint, data):
    with pytest.raises(ConfigError, match="gae needs a critic"):
        run_rl(recipe_config("reft_gsm8k.yaml", checkpoint, data, tmp_path / "x", "critic=none"))
    with pytest.raises(ConfigError, match="rollout.answer_check.format: tree search writes functional-token steps"):
        run_rl(recipe_config("rftt_arithmetic.yaml", checkpoint, data, tmp_path / "y", "rollout.answer_check.format=program"))
    with pytest.raises(ConfigError, match="rollout.answer_check.absolute_tolerance: tree search judges answers exactly"):
        run_rl(recipe_config("rftt_arithmetic.yaml", checkpoint, data, tmp_path / "z",
                             "rollout.answer_check.absolute_tolerance=0.01"))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "final" / "model.safetensors"))


def tensorboard_scalars(run, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / TENSORBOARD_FOLDER))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_each_trained_trajectory_is_logged_once_per_step(tmp_path, checkpoint, data):
    run = tmp_path / "run"
    for _ in range(2):  # the second run starts over in the same folder: its logs replace the first's
        run_rl(recipe_config("rftt_arithmetic.yaml", checkpoint, data, run, "steps=2"))
    assert [json.loads(line)["step"] for line in (run / LOG_FILE).read_text().splitlines()] == [0, 1]
    rollouts = [json.loads(line) for line in (run / ROLLOUT_FILE).read_text().splitlines()]
    assert [record["step"] for record in rollouts] == [0] * 4 + [1] * 4  # 2 prompts x 2 rollouts a step
    problems = {problem.id for problem in load_problems(DatasetSpec(name="json", path=data))}
    for record in rollouts:
        assert record["problem"] in problems and record["group"] in (0, 1)
        assert all(f"<{move}>" in record["response"] for move in record["moves"])
        assert record["reward"] == (1.0 if record["correct"] else 0.0) and math.isfinite(record["advantage"])


def test_a_logged_trajectory_has_its_summed_reward_and_its_mean_advantage(tmp_path, checkpoint, data):
    from rftt.train.rollouts import TrajectoryBatch

    trainer = RLTrainer(recipe_config("grpo_arithmetic.yaml", checkpoint, data, tmp_path / "run"))
    batch = TrajectoryBatch([[1], [1]], [[5, 6], [7]], [0, 1], [Outcome(True, "2", "equal"), Outcome(False, None, "x")],
                            [[], []], [[], []], [["output"], []], ["a", "b"])
    sequences = build_sequences(batch.prompt_ids, batch.response_ids, trainer.tokenizer.pad_token_id)
    assert sequences.response_mask.tolist() == [[1, 1], [0, 1]]  # the second response is one token, right-aligned
    rewards, advantages = torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.tensor([[2.0, 4.0], [5.0, 9.0]])
    nothing = ResponseForward(torch.zeros(2, 2), None, None)
    trainer.log_rollouts(4, Experience(batch, sequences, rewards, nothing, None, advantages, advantages, False))
    logged = [json.loads(line) for line in (tmp_path / "run" / ROLLOUT_FILE).read_text().splitlines()]
    assert [(r["step"], r["problem"], r["reward"], r["advantage"], r["answer"]) for r in logged] == [
        (4, "a", 1.0, 3.0, "2"), (4, "b", 0.0, 9.0, None)]
    assert logged[0]["response"] == trainer.tokenizer.decode([5, 6], skip_special_tokens=False)


def test_metrics_become_scalars_with_nested_keys_joined():
    record = {"step": 3, "reward": 0.5, "moves": {"verify": 2}, "seconds": {"rollout": 1.25}, "done": True, "x": "a"}
    assert scalars(record) == {"reward": 0.5, "moves/verify": 2.0, "seconds/rollout": 1.25}


def test_killed_and_resumed_rl_equals_an_uninterrupted_run(tmp_path, checkpoint, data):
    arguments = ["--config", str(RECIPES / "grpo_arithmetic.yaml"), "--model", str(checkpoint), "--steps", "4",
                 *[item for setting in SMALL[1:] for item in ("--set", setting)], "--set", "save_every=1",
                 "--set", "dataset={name: json, path: " + data + "}", "--device", "cpu"]  # the CPU's figures
    whole = subprocess.run([sys.executable, "-m", "rftt.cli", "rl", *arguments, "--output-dir", str(tmp_path / "whole")],
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = [sys.executable, "-m", "rftt.cli", "rl", *arguments, "--output-dir", str(tmp_path / "killed")]
    run_and_kill_after_lines(killed, tmp_path / "killed" / LOG_FILE, 2)
    resumed = subprocess.run([*killed, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    logged = [json.loads(line) for line in (tmp_path / "killed" / LOG_FILE).read_text().splitlines()]
    assert [record["step"] for record in logged] == [0, 1, 2, 3]
    rollouts = (tmp_path / "killed" / ROLLOUT_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in rollouts] == [step for step in range(4) for _ in range(4)]
    assert tensorboard_scalars(tmp_path / "killed", "reward") == [
        (record["step"] + 1, pytest.approx(record["reward"])) for record in logged]
    expected, got = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)


def test_a_step_saved_but_not_yet_logged_is_logged_on_resume(tmp_path, checkpoint, data):
    run = tmp_path / "run"
    run_rl(recipe_config("grpo_arithmetic.yaml", checkpoint, data, run, "steps=2", "save_every=1"))
    lines = (run / LOG_FILE).read_text().splitlines()
    (run / LOG_FILE).write_text(lines[0] + "\n" + lines[1][:20])  # killed after step 1's checkpoint, mid-line
    run_rl(recipe_config("grpo_arithmetic.yaml", checkpoint, data, run, "steps=3", "save_every=1", "resume=true"))
    logged = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]
    assert [record["step"] for record in logged] == [0, 1, 2]
    assert logged[1]["reward"] == json.loads(lines[1])["reward"]
    assert [step for step, _ in tensorboard_scalars(run, "reward")] == [1, 2, 3]


def test_the_rl_command_prints_its_last_steps_with_or_without_a_kl_term(tmp_path, checkpoint, data, capsys):
    from rftt.cli import main

    for coefficient in (0.0, 0.01):
        arguments = ["rl", "--config", str(RECIPES / "grpo_arithmetic.yaml"), "--model", str(checkpoint),
                     "--output-dir", str(tmp_path / f"kl-{coefficient}"), "--device", "cpu",
                     *[item for setting in [*SMALL, "steps=1", f"kl.coefficient={coefficient}"] for item in ("--set", setting)],
                     "--set", "dataset={name: json, path: " + data + "}"]
        assert main(arguments) == 0
        [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert printed["step"] == 0 and ("kl" in printed) is (coefficient > 0)


def test_two_processes_train_the_same_weights(tmp_path, checkpoint, data):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "rftt.cli", "rl", "--config", str(RECIPES / "grpo_arithmetic.yaml"), "--model", str(checkpoint),
               "--output-dir", str(tmp_path / "ddp"), *[item for setting in SMALL for item in ("--set", setting)],
               "--set", "dataset={name: json, path: " + data + "}", "--set", "steps=2", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    prints = [json.loads((tmp_path / "ddp" / FINGERPRINT_FOLDER / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert prints[0]["weight_sum"] == prints[1]["weight_sum"]


def test_a_large_value_head_gradient_does_not_shrink_the_policy_gradient(tmp_path, checkpoint, data):
    trainer = RLTrainer(recipe_config("reft_gsm8k.yaml", checkpoint, data, tmp_path / "run"))
    policy = trainer.clipped_groups["grad_norm"]
    for parameter in policy:
        parameter.grad = torch.full_like(parameter, 1e-4)
    for parameter in trainer.value_head.parameters():
        parameter.grad = torch.full_like(parameter, 1e3)
    policy_norm = torch.cat([parameter.grad.flatten() for parameter in policy]).norm()
    assert policy_norm < trainer.config.max_grad_norm
    norms = trainer.clip_gradients()
    assert norms["grad_norm"] == pytest.approx(float(policy_norm), rel=1e-4)
    assert norms["value_grad_norm"] > 1e3
    assert all(torch.all(parameter.grad == 1e-4) for parameter in policy)  # one clip of both would scale these
    value_grads = torch.cat([parameter.grad.flatten() for parameter in trainer.value_head.parameters()])
    assert float(value_grads.norm()) == pytest.approx(trainer.config.max_grad_norm, rel=1e-3)


def test_a_step_runs_only_if_at_the_mean_step_time_it_ends_within_the_budget():
    assert step_fits_budget(elapsed=50.0, steps=2, budget_seconds=80.0)
    assert not step_fits_budget(elapsed=50.0, steps=2, budget_seconds=70.0)  # 50 + 25 > 70: stop before, not after
    assert not step_fits_budget(elapsed=30.0, steps=1, budget_seconds=59.0)


def test_a_time_budget_smaller_than_a_step_ends_the_run_after_its_first_step(tmp_path, checkpoint, data):
    history = run_rl(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "run", "steps=5",
                                   "max_minutes=1.0e-6"))
    assert [metrics["step"] for metrics in history] == [0]
    assert (tmp_path / "run" / "final" / "config.json").exists()
    with pytest.raises(ConfigError, match="config.max_minutes: must be positive"):
        RLTrainer(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "x", "max_minutes=0"))


@pytest.mark.parametrize("placement", ["loss", "reward"])
def test_without_a_kl_term_there_is_no_reference_model_and_no_kl_metric(tmp_path, checkpoint, data, placement):
    trainer = RLTrainer(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "run", "steps=1",
                                      "kl.coefficient=0", f"kl.placement={placement}"))
    assert trainer.reference is None and trainer.old_policy_is_current(4)
    metrics = trainer.train_step(0)
    assert "kl" not in metrics and math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["grad_norm"])
    with_kl = RLTrainer(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "kl", "steps=1",
                                      "kl.coefficient=0.01", f"kl.placement={placement}"))
    assert with_kl.reference is not None and "kl" in with_kl.train_step(0)


def test_the_optimizer_takes_its_betas_and_weight_decay_from_the_config(tmp_path, checkpoint, data):
    trainer = RLTrainer(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "run",
                                      "adam_betas=[0.8, 0.9]", "weight_decay=0.5"))
    [group] = trainer.optimizer.param_groups
    assert group["betas"] == (0.8, 0.9) and group["weight_decay"] == 0.5


def test_sampled_rollouts_train_on_the_end_of_sequence_token(tmp_path, checkpoint, data):
    trainer = RLTrainer(recipe_config("grpo_sampled_arithmetic.yaml", checkpoint, data, tmp_path / "run",
                                      "rollout.max_new_tokens=64"))
    eos = trainer.tokenizer.eos_token_id

    def likelier_end(module, inputs, logits):  # about 5% a token, so most responses stop on it
        logits[..., eos] += 3.0
        return logits

    trainer.policy.lm_head.register_forward_hook(likelier_end)
    batch = trainer.rollout(trainer.local_problems(0), 0)
    stopped = [response for response in batch.response_ids if response and response[-1] == eos]
    assert stopped, "no response ended with the end-of-sequence token"
    sequences = build_sequences(batch.prompt_ids, batch.response_ids, trainer.tokenizer.pad_token_id)
    for row, response in enumerate(batch.response_ids):
        assert int(sequences.response_mask[row].sum()) == len(response)  # the EOS is a trained token


def test_the_logged_entropy_builds_no_graph_unless_it_is_trained(checkpoint):
    from rftt.models import load_model

    model, tokenizer = load_model(str(checkpoint), dtype=torch.float32)
    batch = build_sequences([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10]], tokenizer.pad_token_id)
    logged = forward_responses(model, batch, entropy="logged")
    trained = forward_responses(model, batch, entropy="trained")
    assert logged.logprobs.requires_grad and not logged.entropy.requires_grad and trained.entropy.requires_grad
    assert float(logged.entropy) == pytest.approx(float(trained.entropy))


@pytest.mark.parametrize("recipe", ["rftt_arithmetic.yaml", "reft_gsm8k.yaml", "grpo_arithmetic.yaml"])
def test_a_packed_step_has_the_unpacked_steps_gradient(tmp_path, checkpoint, data, recipe):
    """Tree rollouts with old and reference passes, a critic, sampled groups: packing changes no gradient (an
    entropy bonus gives every recipe a gradient where the tiny model's rewards, all equal, give none)."""
    first_gradients = {}
    for packing in (False, True):
        trainer = RLTrainer(recipe_config(recipe, checkpoint, data, tmp_path / str(packing), "steps=1",
                                          "entropy_weight=0.01", f"tree_packing={str(packing).lower()}"))
        assert (trainer.forward.attention is not None) == packing
        recorded, clip = [], trainer.clip_gradients

        def recording(trainer=trainer, recorded=recorded, clip=clip):
            recorded.append(torch.cat([parameter.grad.flatten() for group in trainer.clipped_groups.values()
                                       for parameter in group if parameter.grad is not None]))
            return clip()

        trainer.clip_gradients = recording
        trainer.train_step(0)
        first_gradients[packing] = recorded[0]
    unpacked, packed = first_gradients[False], first_gradients[True]
    assert unpacked.norm() > 0
    assert float((packed - unpacked).norm() / unpacked.norm()) < 1e-5
