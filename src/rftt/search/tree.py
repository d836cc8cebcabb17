"""The search tree: nodes that are reasoning steps, with MCTS statistics, and the selection scores.

A node is one step `<move>content</move>` below its parent; the root is the question.
Children are created as slots (move and prior) when their parent is expanded, and get
their content when a rollout first reaches them. `visits` and `value_sum` are the MCTS
statistics; `virtual_visits` are rollouts in flight through the node, counted as losses
until they finish, so that parallel rollouts in one tree spread out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from rftt.tokens import Move, Step
from rftt.verify.outcome import GoldFormat

UNVISITED_SCORE = math.inf


@dataclass
class Node:
    """One reasoning step of a tree (the root has no move)."""

    id: int
    move: Move | None
    parent: int | None
    depth: int
    prior: float = 1.0
    content: str | None = None
    token_ids: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    expanded: bool = False
    visits: int = 0
    value_sum: float = 0.0
    virtual_visits: int = 0
    terminal: bool = False
    terminal_reason: str | None = None
    reward: float | None = None
    correct: bool | None = None
    answer: str | None = None
    process_reward: float | None = None
    generated_tokens: int = 0

    @property
    def written(self) -> bool:
        """Whether the step's content exists (the root always counts as written)."""
        return self.move is None or self.content is not None

    @property
    def value(self) -> float:
        """Mean backed-up value Q = W / N (0 before any visit)."""
        return self.value_sum / self.visits if self.visits else 0.0


@dataclass
class Tree:
    """All nodes of one problem's search, root first."""

    problem_id: str
    question: str
    gold: str
    nodes: list[Node] = field(default_factory=list)
    rollouts: int = 0
    rollout_terminals: list[int] = field(default_factory=list)
    gold_format: GoldFormat = "auto"

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, move=None, parent=None, depth=0, content=""))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_child(self, parent: Node, move: Move, prior: float) -> Node:
        child = Node(id=len(self.nodes), move=move, parent=parent.id, depth=parent.depth + 1, prior=prior)
        self.nodes.append(child)
        parent.children.append(child.id)
        return child

    def trace_tokens(self, node: Node) -> int:
        """Tokens generated along the path to `node`."""
        return sum(step.generated_tokens for step in self.path(node))

    def path(self, node: Node) -> list[Node]:
        """Nodes from the first step below the root down to `node`."""
        nodes = []
        while node.parent is not None:
            nodes.append(node)
            node = self.nodes[node.parent]
        return nodes[::-1]

    def steps(self, node: Node) -> list[Step]:
        """The written steps from the root down to `node`."""
        return [Step(step.move, step.content or "") for step in self.path(node) if step.move is not None]

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[index] for index in node.children]

    def terminals(self) -> Iterator[Node]:
        return (node for node in self.nodes if node.terminal and node.reward is not None)

    def written_nodes(self) -> int:
        return sum(1 for node in self.nodes if node.move is not None and node.content is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id, "question": self.question, "gold": self.gold, "rollouts": self.rollouts,
            "rollout_terminals": self.rollout_terminals, "gold_format": self.gold_format,
            "nodes": [{**node.__dict__, "move": node.move.value if node.move else None} for node in self.nodes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Tree":
        nodes = [Node(**{**node, "move": Move(node["move"]) if node["move"] else None}) for node in data["nodes"]]
        return cls(data["problem_id"], data["question"], data["gold"], nodes, data["rollouts"],
                   data["rollout_terminals"], data.get("gold_format", "auto"))  # trees written before formats: auto


def uct_score(child: Node, parent_visits: int, exploration: float) -> float:
    """Q/N + c * sqrt(ln N_parent / N), the released formula; unvisited children come first."""
    visits = child.visits + child.virtual_visits
    if visits == 0:
        return UNVISITED_SCORE
    return child.value_sum / visits + exploration * math.sqrt(math.log(max(parent_visits, 1)) / visits)


def puct_score(child: Node, parent_visits: int, exploration: float) -> float:
    """Q/N + c * P * sqrt(N_parent) / (1 + N): AlphaZero's rule, guided by the policy's prior."""
    visits = child.visits + child.virtual_visits
    mean = child.value_sum / visits if visits else 0.0
    return mean + exploration * child.prior * math.sqrt(max(parent_visits, 1)) / (1 + visits)


SELECTION_RULES = {"uct": uct_score, "puct": puct_score}
