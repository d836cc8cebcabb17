"""Tree search: selection, back-up and terminal values by hand; grammar; reflection splices; both policies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from rftt.data import Problem
from rftt.engine import SamplingParams, make_engine
from rftt.engine.hf import HFEngine
from rftt.search import (
    OutcomeScorer,
    PromptedPolicy,
    SearchConfig,
    SelfConsistencyScorer,
    TokenGuidedPolicy,
    Tree,
    TreeSearch,
    WrittenStep,
    puct_score,
    uct_score,
)
from rftt.search.export import ExportConfig, correct_paths, reflection_paths, reflection_splices
from rftt.search.policies import MOVE_EXAMPLES, MOVE_INSTRUCTIONS
from rftt.search.tree import Node
from rftt.tokens import Move, TextTags, add_functional_tokens, is_legal_trace

# Each written step maps to the children it offers: (move, prior, content).
SCRIPT = {
    "": [(Move.NEXT_STEP, 0.7, "2 + 3 = 5"), (Move.ANALYZE, 0.3, "add them")],
    "2 + 3 = 5": [(Move.OUTPUT, 1.0, "\\boxed{5}")],
    "add them": [(Move.DIRECT_ANSWER, 1.0, "The answer is 6")],
    "The answer is 6": [(Move.OUTPUT, 1.0, "\\boxed{6}")],
}
PROBLEM = Problem("p", "What is 2 + 3?", "5", "test")


@dataclass
class ScriptedPolicy:
    """A deterministic policy that offers the children in SCRIPT; counts its calls."""

    calls: int = 0

    def params(self, move):
        return SamplingParams(max_new_tokens=8)

    def moves_and_priors(self, requests):
        return [[(move, prior) for move, prior, _ in SCRIPT.get(node.content, [])] for _, node in requests]

    def write(self, requests):
        self.calls += 1
        written = []
        for tree, node in requests:
            parent = tree.nodes[node.parent]
            move, _, content = SCRIPT[parent.content][parent.children.index(node.id)]
            assert move is node.move
            written.append(WrittenStep(content, generated_tokens=len(content.split())))
        return written

    def automatic_output(self, node):
        return None


def scripted_search(rollouts: int, **settings) -> Tree:
    config = SearchConfig(rollouts=rollouts, parallel_rollouts=1, unvisited_order="prior", exploration=2.0, **settings)
    [tree] = TreeSearch(ScriptedPolicy(), OutcomeScorer(), config).run([PROBLEM])
    return tree


def node_by_content(tree: Tree, content: str) -> Node:
    return next(node for node in tree.nodes if node.content == content)


def test_selection_backup_and_terminal_values_by_hand():
    tree = scripted_search(rollouts=4)
    right, wrong = node_by_content(tree, "2 + 3 = 5"), node_by_content(tree, "add them")
    right_end, wrong_end = node_by_content(tree, "\\boxed{5}"), node_by_content(tree, "\\boxed{6}")
    # Rollout 1 takes the higher prior (right, value 1); 2 the unvisited sibling (wrong, value 0);
    # 3: UCT right 1 + 2*sqrt(ln 2 / 1) = 2.665 > wrong 0 + 1.665; 4: right 1 + 2*sqrt(ln 3 / 2) = 2.482
    # > wrong 2*sqrt(ln 3) = 2.096.
    assert (right_end.reward, right_end.correct, wrong_end.reward, wrong_end.correct) == (1.0, True, 0.0, False)
    assert (tree.root.visits, tree.root.value_sum) == (4, 3.0)
    assert (right.visits, right.value_sum, wrong.visits, wrong.value_sum) == (3, 3.0, 1, 0.0)
    assert tree.rollout_terminals == [right_end.id, wrong_end.id, right_end.id, right_end.id]
    assert all(node.virtual_visits == 0 for node in tree.nodes)
    assert uct_score(right, 3, 2.0) == pytest.approx(1 + 2 * math.sqrt(math.log(3) / 3))
    assert uct_score(wrong, 3, 2.0) == pytest.approx(2 * math.sqrt(math.log(3) / 1))


def test_puct_follows_the_prior_and_the_mean():
    node = Node(id=1, move=Move.NEXT_STEP, parent=0, depth=1, prior=0.25, visits=3, value_sum=1.5)
    assert puct_score(node, 16, 2.0) == pytest.approx(0.5 + 2.0 * 0.25 * 4 / 4)
    assert uct_score(Node(id=2, move=Move.ANALYZE, parent=0, depth=1), 5, 2.0) == math.inf


def test_process_rewards_mix_into_terminal_values():
    class HalfPRM:
        def score_steps(self, items):
            return [[0.5] * len(steps) for _, steps in items]

    config = SearchConfig(rollouts=2, parallel_rollouts=1, unvisited_order="prior")
    [tree] = TreeSearch(ScriptedPolicy(), OutcomeScorer(HalfPRM(), 0.6, 0.4), config).run([PROBLEM])
    assert node_by_content(tree, "\\boxed{5}").reward == pytest.approx(0.6 * 1 + 0.4 * 0.5)
    assert node_by_content(tree, "\\boxed{6}").reward == pytest.approx(0.4 * 0.5)


def test_depth_limit_ends_a_rollout_with_value_zero():
    tree = scripted_search(rollouts=2, max_depth=1)
    first_steps = [node for node in tree.nodes if node.depth == 1]
    assert all(node.terminal and node.terminal_reason == "depth_limit" and node.reward == 0 for node in first_steps)
    assert tree.root.value_sum == 0


def test_parallel_rollouts_spread_by_virtual_loss_and_batch_writes():
    policy = ScriptedPolicy()
    config = SearchConfig(rollouts=2, parallel_rollouts=2, unvisited_order="prior")
    [tree] = TreeSearch(policy, OutcomeScorer(), config).run([PROBLEM])
    assert {tree.nodes[terminal].content for terminal in tree.rollout_terminals} == {"\\boxed{5}", "\\boxed{6}"}
    # Both first steps were written in the same call, then both second steps: 3 calls in all, not 4.
    assert policy.calls == 3


def test_self_consistency_values_reward_agreement_without_the_gold():
    config = SearchConfig(rollouts=3, parallel_rollouts=1, unvisited_order="prior")
    [tree] = TreeSearch(ScriptedPolicy(), SelfConsistencyScorer(), config).run([PROBLEM])
    assert node_by_content(tree, "\\boxed{5}").reward == 1.0  # first answer: agrees with itself
    assert node_by_content(tree, "\\boxed{6}").reward == pytest.approx(1 / 2)  # one earlier answer, different


def test_tree_round_trips_through_json():
    tree = scripted_search(rollouts=3)
    assert Tree.from_json(tree.to_json()) == tree


def handmade_tree() -> Tree:
    """root -> clarify -> next_step(wrong) -> output 6 ; clarify -> next_step(right) -> output 5."""
    tree = Tree("q", "What is 2 + 3?", "5")

    def add(parent, move, content, **fields):
        node = tree.add_child(parent, move, 1.0)
        node.content = content
        for key, value in fields.items():
            setattr(node, key, value)
        return node

    clarify = add(tree.root, Move.CLARIFY, "We add 2 and 3.", visits=2, value_sum=1.0)
    wrong = add(clarify, Move.NEXT_STEP, "2 + 3 = 6", visits=1)
    add(wrong, Move.OUTPUT, "\\boxed{6}", terminal=True, terminal_reason="output", reward=0.0, correct=False, visits=1)
    right = add(clarify, Move.NEXT_STEP, "2 + 3 = 5", visits=1, value_sum=1.0)
    add(right, Move.OUTPUT, "\\boxed{5}", terminal=True, terminal_reason="output", reward=1.0, correct=True,
        visits=1, value_sum=1.0)
    return tree


def test_reflection_splice_is_wrong_steps_verify_refine_correct_steps_output(tiny_model, tiny_tokenizer):
    tree = handmade_tree()
    [splice] = reflection_splices(tree, limit=5)
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=tiny_tokenizer)
    tiny_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    [record] = reflection_paths([splice], engine, tiny_tokenizer, ExportConfig(verify_max_tokens=6))
    moves = [step["move"] for step in record["steps"]]
    contents = [step["content"] for step in record["steps"]]
    assert moves == ["clarify", "next_step", "verify", "refine", "next_step", "output"]
    assert contents[:2] == ["We add 2 and 3.", "2 + 3 = 6"] and contents[4:] == ["2 + 3 = 5", "\\boxed{5}"]
    assert contents[3] == ExportConfig().refine_text
    assert [step["value"] for step in record["steps"]] == [0.5, 0.0, None, None, 1.0, 1.0]
    assert record["kind"] == "reflection" and record["text"].startswith("<clarify>We add 2 and 3.</clarify>")
    [path] = correct_paths(tree, limit=5)
    assert [step["move"] for step in path["steps"]] == ["clarify", "next_step", "output"]


def test_illegal_splices_are_skipped():
    tree = handmade_tree()
    analysis = tree.add_child(tree.root, Move.ANALYZE, 1.0)
    analysis.content = "just guess"
    guess = tree.add_child(analysis, Move.OUTPUT, 1.0)
    guess.content, guess.terminal, guess.terminal_reason, guess.reward, guess.correct = "7", True, "output", 0.0, False
    # analyze -> verify is illegal, so the wrong branch through <analyze> yields no splice.
    splices = reflection_splices(tree, limit=5)
    assert [[node.content for node in splice.wrong] for splice in splices] == [["2 + 3 = 6"]]


def test_reflection_limit_caps_the_splices_and_zero_means_none():
    tree = handmade_tree()
    second = tree.add_child(tree.nodes[1], Move.NEXT_STEP, 1.0)  # another wrong answer under the clarify step
    second.content = "2 + 3 = 4"
    wrong = tree.add_child(second, Move.OUTPUT, 1.0)
    wrong.content, wrong.terminal, wrong.terminal_reason, wrong.reward, wrong.correct = "\\boxed{4}", True, "output", 0.0, False
    assert len(reflection_splices(tree, limit=5)) == 2
    assert len(reflection_splices(tree, limit=1)) == 1
    assert reflection_splices(tree, limit=0) == []  # was every splice: the cap was checked only after an append


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tiny_tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")
    return tiny_tokenizer


PROBLEMS = [Problem(f"p{index}", f"What is {index} + {index}?", str(2 * index), "test") for index in range(3)]


def assert_legal_trees(trees: list[Tree]) -> None:
    for tree in trees:
        for node in tree.nodes[1:]:
            assert is_legal_trace([step.move for step in tree.path(node)]), [s.move for s in tree.path(node)]


def test_prompted_policy_end_to_end_on_a_tiny_model(tiny_model, chat_tokenizer):
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=chat_tokenizer)
    policy = PromptedPolicy(engine, chat_tokenizer, candidates=2, seed=0,
                            max_tokens={move: 8 for move in Move})
    search = TreeSearch(policy, OutcomeScorer(), SearchConfig(rollouts=4, max_depth=4, seed=0))
    trees = search.run(PROBLEMS)
    assert [tree.rollouts for tree in trees] == [4, 4, 4]
    assert_legal_trees(trees)
    assert search.statistics.nodes_written > 0 and search.statistics.generated_tokens > 0
    allowed = {None, Move.CLARIFY, Move.ANALYZE, Move.SUBQUESTION, Move.NEXT_STEP, Move.DIRECT_ANSWER, Move.OUTPUT}
    assert {node.move for tree in trees for node in tree.nodes} <= allowed


def test_a_prompted_step_cut_at_its_length_limit_is_a_dead_end(tiny_model, chat_tokenizer):
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=chat_tokenizer)
    policy = PromptedPolicy(engine, chat_tokenizer, seed=0, max_tokens={move: 2 for move in Move})
    trees = TreeSearch(policy, OutcomeScorer(), SearchConfig(rollouts=3, max_depth=4, seed=0)).run(PROBLEMS[:1])
    written = [node for node in trees[0].nodes[1:] if node.content is not None]
    cut = [node for node in written if node.generated_tokens == 2]
    assert cut and all(node.terminal and node.terminal_reason == "step_too_long" and not node.children for node in cut)


def test_prompted_steps_are_chats_with_the_moves_instruction_and_worked_example(tiny_model, chat_tokenizer):
    policy = PromptedPolicy(make_engine("hf", model=tiny_model, tokenizer=chat_tokenizer), chat_tokenizer)
    tree = Tree("p", "What is 2 + 3?", "5")
    first = tree.add_child(tree.root, Move.NEXT_STEP, 1.0)
    first.content = "2 + 3 = 5."
    output = tree.add_child(first, Move.OUTPUT, 1.0)
    prompt = policy.step_prompt(tree, output)
    assert prompt.startswith(f"system: {MOVE_INSTRUCTIONS[Move.OUTPUT]}\n")
    example = MOVE_EXAMPLES[Move.OUTPUT][0]
    assert f"assistant: {example.content}\n" in prompt
    assert prompt.endswith("user: Question: What is 2 + 3?\nSteps so far:\n1. (next_step) 2 + 3 = 5.\nassistant: ")


def test_token_guided_policy_end_to_end_on_a_tiny_model(tiny_model, chat_tokenizer):
    tokens = add_functional_tokens(tiny_model, chat_tokenizer)
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=chat_tokenizer)
    policy = TokenGuidedPolicy(engine, chat_tokenizer, tokens, temperature=1.0, seed=0,
                               max_tokens={move: 6 for move in Move})
    search = TreeSearch(policy, OutcomeScorer(), SearchConfig(rollouts=3, max_depth=5, selection="puct",
                                                              unvisited_order="prior"))
    trees = search.run(PROBLEMS)
    assert_legal_trees(trees)
    for tree in trees:
        for node in tree.nodes[1:]:
            if node.content is not None:
                assert node.token_ids[0] == tokens.opening_ids[node.move]
                assert node.token_ids[-1] in (tokens.closing_ids[node.move], chat_tokenizer.eos_token_id)
        priors = [child.prior for child in tree.children(tree.root)]
        assert sum(priors) == pytest.approx(1.0) and len(set(priors)) > 1


def test_a_token_guided_step_ends_at_an_opening_tag_and_is_closed_with_its_own_tag(tiny_model, chat_tokenizer):
    from rftt.engine.types import Completion

    tokens = add_functional_tokens(tiny_model, chat_tokenizer)
    policy = TokenGuidedPolicy(make_engine("hf", model=tiny_model, tokenizer=chat_tokenizer), chat_tokenizer, tokens)
    assert set(policy.sampling().stop_token_ids) == set(tokens.all_ids)
    tree = Tree("p", "What is 2 + 3?", "5")
    node = tree.add_child(tree.root, Move.SUBQUESTION, 1.0)
    content = chat_tokenizer.encode("what is 2 + 3", add_special_tokens=False)
    stray = tokens.opening_ids[Move.SUBQUESTION]
    step = policy.written_step(node, Completion("", [*content, stray], [0.0] * (len(content) + 1), "stop", stray, 0))
    assert step.token_ids == [stray, *content, tokens.closing_ids[Move.SUBQUESTION]] and not step.ended


def test_token_guided_search_with_text_tags_writes_steps_their_spans_find_again(tiny_model, chat_tokenizer):
    tags = TextTags.from_tokenizer(chat_tokenizer)
    vocabulary = len(chat_tokenizer)
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=chat_tokenizer)
    policy = TokenGuidedPolicy(engine, chat_tokenizer, tags, temperature=1.0, seed=0, max_tokens={move: 6 for move in Move})
    assert policy.sampling().stop == tags.tag_texts and not policy.sampling().stop_token_ids
    trees = TreeSearch(policy, OutcomeScorer(), SearchConfig(rollouts=3, max_depth=4, selection="puct",
                                                             unvisited_order="prior")).run(PROBLEMS)
    assert_legal_trees(trees)
    assert len(chat_tokenizer) == vocabulary
    for tree in trees:
        for terminal in (tree.nodes[index] for index in tree.rollout_terminals):
            path = [node for node in tree.path(terminal) if node.content is not None]
            response = [token for node in path for token in node.token_ids]
            assert [span.move for span in tags.step_spans(response)] == [node.move for node in path]
        priors = [child.prior for child in tree.children(tree.root)]
        assert sum(priors) == pytest.approx(1.0) and len(set(priors)) > 1


def test_max_children_keeps_the_moves_with_the_highest_priors(tiny_model, chat_tokenizer):
    tokens = add_functional_tokens(tiny_model, chat_tokenizer)
    engine = make_engine("hf", model=tiny_model.eval(), tokenizer=chat_tokenizer)
    tree = Tree("p", "What is 2 + 3?", "5")
    step = tree.add_child(tree.root, Move.NEXT_STEP, 1.0)
    requests = [(tree, tree.root), (tree, step)]
    every = TokenGuidedPolicy(engine, chat_tokenizer, tokens).moves_and_priors(requests)
    top_two = TokenGuidedPolicy(engine, chat_tokenizer, tokens, max_children=2).moves_and_priors(requests)
    for all_slots, kept in zip(every, top_two):
        assert len(all_slots) > 2 and kept == sorted(all_slots, key=lambda slot: -slot[1])[:2]


def test_sampled_children_draw_child_slots_from_the_priors():
    priors = {Move.NEXT_STEP: 0.6, Move.OUTPUT: 0.4, Move.VERIFY: 0.0}
    ranked = [Move.NEXT_STEP, Move.OUTPUT, Move.VERIFY]
    slots = TokenGuidedPolicy(None, None, None, sampled_children=2000, seed=3).child_slots(ranked, priors)
    counts = {move: sum(slot_move == move for slot_move, _ in slots) for move in ranked}
    assert counts[Move.VERIFY] == 0 and counts[Move.OUTPUT] == 1  # a move of prior 0 is never drawn, output once
    assert 2000 * 0.55 < counts[Move.NEXT_STEP] < 2000 * 0.65  # the rest of the draws, at about its prior
    for move in (Move.NEXT_STEP, Move.OUTPUT):  # the copies of a move share its prior
        assert sum(prior for slot_move, prior in slots if slot_move == move) == pytest.approx(priors[move])
    again = [TokenGuidedPolicy(None, None, None, sampled_children=4, seed=seed).child_slots(ranked, priors)
             for seed in (7, 7)]
    assert again[0] == again[1] and 1 <= len(again[0]) <= 4
    only_top = TokenGuidedPolicy(None, None, None, max_children=1, sampled_children=5, seed=0).child_slots(
        ranked[:1], priors)
    assert only_top == [(Move.NEXT_STEP, pytest.approx(0.12))] * 5


def write_step(model, tokenizer, tags, move: Move, text: str, token_ids: list[int], finish_reason: str, stop_reason):
    """What a token-guided policy makes of one completion, written as the engine would have returned it."""
    from rftt.engine.types import Completion

    policy = TokenGuidedPolicy(make_engine("hf", model=model, tokenizer=tokenizer), tokenizer, tags)
    tree = Tree("p", "What is 2 + 3?", "5")
    node = tree.add_child(tree.root, move, 1.0)
    return policy.written_step(node, Completion(text, token_ids, [0.0] * len(token_ids), finish_reason, stop_reason, 0))


def test_a_text_tag_step_stopped_at_a_tag_is_its_text_closed_with_its_own_tag(tiny_model, chat_tokenizer):
    tags = TextTags.from_tokenizer(chat_tokenizer)
    sampled = chat_tokenizer.encode("2 + 3 = 5.</next_step><", add_special_tokens=False)
    step = write_step(tiny_model, chat_tokenizer, tags, Move.NEXT_STEP, "2 + 3 = 5.", sampled, "stop", "</next_step>")
    content = chat_tokenizer.encode("2 + 3 = 5.", add_special_tokens=False)
    assert step.token_ids == [*tags.opening(Move.NEXT_STEP), *content, *tags.closing(Move.NEXT_STEP)]
    assert step.content == "2 + 3 = 5." and not step.ended and step.generated_tokens == len(sampled)


@pytest.mark.parametrize("kind", ["functional_tokens", "text"])
def test_a_step_ended_by_end_of_sequence_without_a_stop_reason_ends_the_answer(tiny_model, chat_tokenizer, kind):
    """vLLM and OpenAI-compatible servers report no stop reason for the end of sequence, only `stop`."""
    tags = add_functional_tokens(tiny_model, chat_tokenizer) if kind == "functional_tokens" else TextTags.from_tokenizer(
        chat_tokenizer)
    sampled = [*chat_tokenizer.encode("2 + 3 = 5.", add_special_tokens=False), chat_tokenizer.eos_token_id]
    step = write_step(tiny_model, chat_tokenizer, tags, Move.DIRECT_ANSWER, "2 + 3 = 5.", sampled, "stop", None)
    assert step.ended and step.token_ids == [*tags.opening(Move.DIRECT_ANSWER), *sampled]
    assert step.content == "2 + 3 = 5."


def test_a_text_step_cut_by_the_length_limit_drops_a_half_written_tag(tiny_model, chat_tokenizer):
    tags = TextTags.from_tokenizer(chat_tokenizer)
    sampled = chat_tokenizer.encode("2 < 3 and 2 + 3 = 5.</next_ste", add_special_tokens=False)
    step = write_step(tiny_model, chat_tokenizer, tags, Move.NEXT_STEP, chat_tokenizer.decode(sampled), sampled, "length",
                      None)
    assert step.content == "2 < 3 and 2 + 3 = 5." and step.truncated and not step.ended
    assert step.token_ids[-len(tags.closing(Move.NEXT_STEP)):] == tags.closing(Move.NEXT_STEP)


class RecordingEngine(HFEngine):
    """The real hf engine, keeping the requests each stream was fed."""

    def stream(self, feed, params):
        self.fed: list = []
        return super().stream(lambda: self.fed.extend(requests := list(feed())) or requests, params)


def test_sibling_candidates_are_one_request_sampled_n_times_with_their_moves_limit(tiny_model, chat_tokenizer):
    engine = RecordingEngine(tiny_model.eval(), chat_tokenizer)
    policy = PromptedPolicy(engine, chat_tokenizer, seed=0, max_tokens={move: 3 + index for index, move in enumerate(Move)})
    tree = Tree("p", "What is 2 + 3?", "5")
    nodes = [tree.add_child(tree.root, move, 1.0) for move in (Move.NEXT_STEP, Move.NEXT_STEP, Move.CLARIFY)]
    steps = policy.write([(tree, node) for node in nodes])
    assert sorted((request.n, request.max_new_tokens) for request in engine.fed) == sorted(
        [(2, policy.max_tokens[Move.NEXT_STEP]), (1, policy.max_tokens[Move.CLARIFY])])
    assert all(step.generated_tokens <= policy.max_tokens[node.move] for node, step in zip(nodes, steps))


def test_streamed_search_hands_new_steps_to_the_running_batch(tiny_model, chat_tokenizer):
    engine = RecordingEngine(tiny_model.eval(), chat_tokenizer, max_batch_rows=8)
    policy = PromptedPolicy(engine, chat_tokenizer, seed=0, end_truncated_steps=False,
                            max_tokens={move: 4 + 3 * (move is Move.DIRECT_ANSWER) for move in Move})
    search = TreeSearch(policy, OutcomeScorer(), SearchConfig(rollouts=4, parallel_rollouts=2, max_depth=4, seed=0))
    trees = search.run(PROBLEMS)
    assert [tree.rollouts for tree in trees] == [4, 4, 4]
    assert_legal_trees(trees)
    assert engine.refills > 0  # steps fed while others were decoding joined the batch
    assert sum(request.n for request in engine.fed) == search.statistics.nodes_written
    written = [node for tree in trees for node in tree.nodes[1:] if node.content is not None and node.move is not None]
    assert len(written) >= search.statistics.nodes_written


def test_each_tree_is_reported_once_when_it_has_used_its_rollouts():
    done: list[Tree] = []
    problems = [Problem(f"p{index}", PROBLEM.question, PROBLEM.answer, "test") for index in range(3)]
    config = SearchConfig(rollouts=3, parallel_rollouts=2, trees_at_once=2, unvisited_order="prior")
    trees = TreeSearch(ScriptedPolicy(), OutcomeScorer(), config).run(problems, on_tree_done=done.append)
    assert sorted(tree.problem_id for tree in done) == ["p0", "p1", "p2"]
    assert all(tree.rollouts == 3 for tree in done) and {id(tree) for tree in done} == {id(tree) for tree in trees}


def test_correct_paths_come_best_valued_first():
    tree = Tree("p", "What is 2 + 3?", "5")

    def step(parent, move, content, visits, value_sum, correct=None):
        node = tree.add_child(parent, move, 1.0)
        node.content, node.visits, node.value_sum = content, visits, value_sum
        if correct is not None:
            node.terminal, node.terminal_reason, node.reward, node.correct = True, "output", 1.0, correct
        return node

    detour = step(tree.root, Move.CLARIFY, "We need 2 + 3.", 4, 1.0)
    step(step(detour, Move.NEXT_STEP, "2 + 3 = 5", 1, 1.0), Move.OUTPUT, "\\boxed{5}", 1, 1.0, True)
    direct = step(tree.root, Move.NEXT_STEP, "2 + 3 = 5.", 4, 3.0)
    step(direct, Move.OUTPUT, "\\boxed{5}", 3, 3.0, True)
    lucky = step(tree.root, Move.ANALYZE, "Add.", 1, 1.0)
    step(step(lucky, Move.NEXT_STEP, "2 + 3 = 5!", 1, 1.0), Move.OUTPUT, "\\boxed{5}", 1, 1.0, True)
    paths = correct_paths(tree, limit=5)
    # mean Q: direct (0.75 + 1) / 2, lucky (1 + 1 + 1) / 3, detour (0.25 + 1 + 1) / 3
    assert [path["steps"][0]["content"] for path in paths] == ["Add.", "2 + 3 = 5.", "We need 2 + 3."]
