"""Training data from search trees: correct paths, and reflection paths spliced from a wrong and a right branch.

A reflection path takes a wrong branch and a correct branch that share a node A (the
deepest shared one): the steps down to A, the wrong branch's steps (without its wrong
`<output>`), a `<verify>` step saying what went wrong (written by a model that compares
the wrong branch with the correct one), a `<refine>` step, then the correct branch's
steps through its `<output>`. Splices the move grammar forbids are skipped. Pairs are
taken in a fixed order, so the same trees always give the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rftt.engine.base import Engine
from rftt.engine.types import SamplingParams
from rftt.search.tree import Node, Tree
from rftt.tokens import Move, Step, is_legal_trace, legal_next_moves, render_steps

REFINE_TEXT = "Going back to where it went wrong and doing that part again correctly."
VERIFY_INSTRUCTION = (
    "Two attempts at the same problem agree up to a point and then differ. The first one is wrong, the second one "
    "is right. In one or two sentences, say what is wrong in the first attempt. Do not give the final answer."
)


@dataclass(frozen=True)
class ExportConfig:
    max_correct_per_problem: int = 4
    max_reflections_per_problem: int = 2
    refine_text: str = REFINE_TEXT
    verify_max_tokens: int = 96


@dataclass(frozen=True)
class Splice:
    """The parts of one reflection path, before its `<verify>` text is written."""

    tree: Tree
    shared: list[Node]
    wrong: list[Node]
    right: list[Node]


def _steps(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    return [{"move": node.move.value, "content": node.content or "", "value": node.value} for node in nodes]


def _record(tree: Tree, kind: str, number: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    trace = [Step(Move(step["move"]), step["content"]) for step in steps]
    return {"id": f"{tree.problem_id}/{kind}/{number}", "problem_id": tree.problem_id, "question": tree.question,
            "answer": tree.gold, "kind": kind, "steps": steps, "text": render_steps(trace)}


def correct_paths(tree: Tree, limit: int) -> list[dict[str, Any]]:
    """Distinct root-to-answer paths that end in a correct `<output>`, best first: highest mean node value Q
    over the path's steps (steps from which the search most often reached the answer), then fewest steps."""
    paths = [tree.path(node) for node in tree.terminals() if node.correct and node.move is Move.OUTPUT]
    paths.sort(key=lambda path: (-sum(node.value for node in path) / len(path), len(path), path[-1].id))
    records, seen = [], set()
    for path in paths:
        key = tuple((step.move, step.content) for step in path)
        if key not in seen and len(records) < limit:
            seen.add(key)
            records.append(_record(tree, "correct", len(records), _steps(path)))
    return records


def _shared_prefix(first: list[Node], second: list[Node]) -> int:
    length = 0
    while length < min(len(first), len(second)) and first[length].id == second[length].id:
        length += 1
    return length


def reflection_splices(tree: Tree, limit: int) -> list[Splice]:
    """For each wrong answer (in node order), the correct answer sharing the deepest node with it, if legal."""
    outputs = [node for node in tree.terminals() if node.move is Move.OUTPUT]
    right_ends = [node for node in outputs if node.correct]
    splices, seen = [], set()
    for wrong_end in (node for node in outputs if node.correct is False):
        if len(splices) >= limit:
            break
        wrong_path = tree.path(wrong_end)
        candidates = sorted(right_ends, key=lambda node: (-_shared_prefix(wrong_path, tree.path(node)), node.id))
        for right_end in candidates:
            right_path = tree.path(right_end)
            shared = _shared_prefix(wrong_path, right_path)
            splice = Splice(tree, wrong_path[:shared], wrong_path[shared:-1], right_path[shared:])
            key = tuple(node.id for node in splice.shared + splice.wrong + splice.right)
            if _legal(splice) and key not in seen:
                seen.add(key)
                splices.append(splice)
                break
    return splices


def _legal(splice: Splice) -> bool:
    """The wrong branch has a step that `<verify>` may follow, and the right branch may follow `<refine>`."""
    if not splice.wrong or not splice.right or Move.VERIFY not in legal_next_moves(splice.wrong[-1].move):
        return False
    moves = [node.move for node in splice.shared + splice.wrong] + [Move.VERIFY, Move.REFINE]
    moves += [node.move for node in splice.right]
    return is_legal_trace(moves, require_terminal=True)


def _verify_prompt(splice: Splice, tokenizer: Any) -> str:
    def attempt(nodes: Sequence[Node]) -> str:
        return "\n".join(f"- ({node.move.value}) {(node.content or '').strip()}" for node in nodes)

    shared = attempt(splice.shared) or "(nothing yet)"
    message = (f"{VERIFY_INSTRUCTION}\n\nQuestion: {splice.tree.question}\n\nSteps both attempts share:\n{shared}\n\n"
               f"First attempt continues:\n{attempt(splice.wrong)}\n\nSecond attempt continues:\n{attempt(splice.right)}")
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                         tokenize=False)


def reflection_paths(splices: Sequence[Splice], engine: Engine, tokenizer: Any,
                     config: ExportConfig) -> list[dict[str, Any]]:
    """Reflection records, with every `<verify>` text written in one batched call."""
    if not splices:
        return []
    params = SamplingParams(temperature=0.0, max_new_tokens=config.verify_max_tokens)
    verdicts = engine.generate([_verify_prompt(splice, tokenizer) for splice in splices], params)
    counters: dict[str, int] = {}
    records = []
    for splice, [verdict] in zip(splices, verdicts):
        steps = _steps(splice.shared + splice.wrong)
        steps += [{"move": Move.VERIFY.value, "content": verdict.text.strip(), "value": None},
                  {"move": Move.REFINE.value, "content": config.refine_text, "value": None}]
        steps += _steps(splice.right)
        number = counters.get(splice.tree.problem_id, 0)
        counters[splice.tree.problem_id] = number + 1
        records.append(_record(splice.tree, "reflection", number, steps))
    return records


def export_training_data(trees: Sequence[Tree], engine: Engine, tokenizer: Any,
                         config: ExportConfig = ExportConfig()) -> list[dict[str, Any]]:
    """Correct and reflection paths of every tree, in tree order."""
    records = [record for tree in trees for record in correct_paths(tree, config.max_correct_per_problem)]
    splices = [splice for tree in trees for splice in reflection_splices(tree, config.max_reflections_per_problem)]
    return records + reflection_paths(splices, engine, tokenizer, config)
