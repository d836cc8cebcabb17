"""Monte Carlo tree search over reasoning steps, batched across trees.

Each rollout walks from the root: it takes the best child by the selection rule (UCT or
PUCT; unvisited children first, in random or prior order), waits when the node it reached
must be written or expanded, and ends at a terminal node, whose value it backs up along
its path. Many rollouts are in flight at once (several per tree, spread by virtual
loss). Expansions and terminal scoring of all waiting rollouts are batched; steps are
streamed through the engine, which takes new steps into its running batch as soon as
earlier ones finish, so the batch stays full. Terminal: an `<output>` step, the end
of the model's answer, the depth limit, or the token budget.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

from rftt.data import Problem
from rftt.search.policies import ExpansionPolicy, WrittenStep
from rftt.search.scoring import TerminalScorer
from rftt.search.tree import SELECTION_RULES, Node, Tree
from rftt.tokens import Move


@dataclass(frozen=True)
class SearchConfig:
    """How much to search and how to choose. `trees_at_once=1, parallel_rollouts=1, max_batch=1` is the
    released design (one tree, one rollout, one engine call per node)."""

    rollouts: int = 16
    parallel_rollouts: int = 4
    trees_at_once: int = 64
    max_batch: int | None = None
    max_depth: int = 15
    max_trace_tokens: int = 2048
    selection: Literal["uct", "puct"] = "uct"
    exploration: float = 2.0
    unvisited_order: Literal["random", "prior"] = "random"
    seed: int = 0


@dataclass
class SearchStatistics:
    """What a search did, for throughput figures."""

    nodes_written: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def nodes_per_second(self) -> float:
        return self.nodes_written / self.seconds if self.seconds else 0.0


@dataclass
class _Walker:
    """One rollout in flight: its tree and the nodes it went through (root first)."""

    tree: Tree
    path: list[Node] = field(default_factory=list)

    @property
    def node(self) -> Node:
        return self.path[-1]


class TreeSearch:
    """Runs MCTS on many problems with one expansion policy and one terminal scorer."""

    def __init__(self, policy: ExpansionPolicy, scorer: TerminalScorer, config: SearchConfig = SearchConfig()):
        self.policy = policy
        self.scorer = scorer
        self.config = config
        self.statistics = SearchStatistics()
        self._random = random.Random(config.seed)
        self._score = SELECTION_RULES[config.selection]

    def run(self, problems: Sequence[Problem], on_tree_done: Callable[[Tree], None] | None = None) -> list[Tree]:
        """One finished tree per problem, in order. Up to `trees_at_once` trees are searched together; when
        one has used its rollouts, the next problem's tree takes its place, so batches stay full. Steps are
        written through the policy's stream: whenever a step comes back, its rollout goes on, and the engine
        asks for the next steps while the others are still being written. `on_tree_done` is called with
        each tree as it uses up its rollouts (for progress)."""
        trees = [Tree(problem.id, problem.question, problem.answer, gold_format=problem.gold_format)
                 for problem in problems]
        self._waiting_trees = list(reversed(trees))
        self._active: list[Tree] = []
        self._walkers: list[_Walker] = []
        self._being_written: set[tuple[int, int]] = set()
        self._on_tree_done = on_tree_done
        started = time.perf_counter()
        for tree, node, step in self._written_steps():
            self._being_written.discard((id(tree), node.id))
            node.content, node.token_ids, node.generated_tokens = step.content, step.token_ids, step.generated_tokens
            self.statistics.nodes_written += 1
            self.statistics.generated_tokens += step.generated_tokens
            self._after_writing(tree, node, ended=step.ended, dead_end=step.dead_end)
        self.statistics.seconds += time.perf_counter() - started
        return trees

    def _written_steps(self) -> Iterator[tuple[Tree, Node, WrittenStep]]:
        """Steps as they are written: streamed when the policy can stream, else in batches of `max_batch`, each
        batch written before the search goes on (with `max_batch=1`, one engine call per node)."""
        write_stream = getattr(self.policy, "write_stream", None)
        if self.config.max_batch is None and write_stream is not None:
            yield from write_stream(self._next_writes)
            return
        while requests := self._next_writes():
            for start in range(0, len(requests), self.config.max_batch or len(requests)):
                batch = requests[start : start + (self.config.max_batch or len(requests))]
                for (tree, node), step in zip(batch, self.policy.write(batch)):
                    yield tree, node, step

    def _next_writes(self) -> list[tuple[Tree, Node]]:
        """Advance every rollout as far as it goes without new steps (expanding, scoring terminals, backing
        up, starting rollouts and trees), and return the nodes that need writing and are not being written.
        Empty when every rollout waits for a step already being written, or the search is over."""
        while True:
            for tree in self._active:
                if tree.rollouts >= self.config.rollouts and self._on_tree_done is not None:
                    self._on_tree_done(tree)
            self._active = [tree for tree in self._active if tree.rollouts < self.config.rollouts]
            while self._waiting_trees and len(self._active) < self.config.trees_at_once:
                self._active.append(self._waiting_trees.pop())
            self._walkers.extend(self._new_walkers(self._active, self._walkers))
            if not self._walkers:
                return []
            waiting = self._descend_all(self._walkers)
            finished = [walker for walker in self._walkers if walker.node.terminal and walker.node.reward is not None]
            for walker in finished:
                self._back_up(walker)
            self._walkers = [walker for walker in self._walkers if walker not in finished]
            self._in_batches(self._score_terminals, waiting["score"])
            writes = [(tree, node) for tree, node in self._with_unwritten_siblings(waiting["write"])
                      if (id(tree), node.id) not in self._being_written]
            if writes:
                self._being_written.update((id(tree), node.id) for tree, node in writes)
                return writes
            if not finished and not waiting["score"]:
                return []

    def _descend_all(self, walkers: list[_Walker]) -> dict[str, list[tuple[Tree, Node]]]:
        """Walk every rollout down as far as it goes, expanding nodes on the way (expansions are batched,
        then the walkers go on), until each one waits for a node to be written or scored, or has ended."""
        while True:
            waiting: dict[str, dict[tuple[int, int], tuple[Tree, Node]]] = {"expand": {}, "write": {}, "score": {}}
            for walker in walkers:
                node = self._descend(walker)
                kind = ("write" if not node.written else "score" if node.terminal and node.reward is None
                        else None if node.terminal else "expand")
                if kind:
                    waiting[kind][(id(walker.tree), node.id)] = (walker.tree, node)
            if not waiting["expand"]:
                return {kind: list(requests.values()) for kind, requests in waiting.items()}
            self._in_batches(self._expand, list(waiting["expand"].values()))

    @staticmethod
    def _with_unwritten_siblings(requests: list[tuple[Tree, Node]]) -> list[tuple[Tree, Node]]:
        """Nodes to write, plus their unwritten siblings of the same move: candidates of one move are written
        together (as the released search expands every candidate), sharing their prompt's prefill."""
        chosen: dict[tuple[int, int], tuple[Tree, Node]] = {}
        for tree, node in requests:
            assert node.parent is not None
            for sibling in tree.children(tree.nodes[node.parent]):
                if sibling.move is node.move and not sibling.written:
                    chosen.setdefault((id(tree), sibling.id), (tree, sibling))
        return list(chosen.values())

    def _new_walkers(self, trees: list[Tree], walkers: list[_Walker]) -> list[_Walker]:
        """Start rollouts until each tree has `parallel_rollouts` in flight or its budget is used."""
        started = []
        for tree in trees:
            in_flight = sum(walker.tree is tree for walker in walkers)
            room = min(self.config.parallel_rollouts - in_flight, self.config.rollouts - tree.rollouts - in_flight)
            for _ in range(max(room, 0)):
                tree.root.virtual_visits += 1
                started.append(_Walker(tree, [tree.root]))
        return started

    def _descend(self, walker: _Walker) -> Node:
        """Move the walker down through written, expanded nodes until it needs work or ends."""
        node = walker.node
        while node.written and node.expanded and not node.terminal and node.children:
            node = self._select(walker.tree, node)
            node.virtual_visits += 1
            walker.path.append(node)
        return node

    def _select(self, tree: Tree, parent: Node) -> Node:
        parent_visits = parent.visits + parent.virtual_visits
        children = tree.children(parent)
        if self.config.unvisited_order == "random":
            self._random.shuffle(children)
        else:
            children.sort(key=lambda child: -child.prior)
        return max(children, key=lambda child: self._score(child, parent_visits, self.config.exploration))

    def _back_up(self, walker: _Walker) -> None:
        value = walker.node.reward or 0.0
        for node in walker.path:
            node.virtual_visits -= 1
            node.visits += 1
            node.value_sum += value
        walker.tree.rollouts += 1
        walker.tree.rollout_terminals.append(walker.node.id)

    def _in_batches(self, work, requests: list[tuple[Tree, Node]]) -> None:
        size = self.config.max_batch or len(requests) or 1
        for start in range(0, len(requests), size):
            work(requests[start : start + size])

    def _expand(self, requests: list[tuple[Tree, Node]]) -> None:
        for (tree, node), slots in zip(requests, self.policy.moves_and_priors(requests)):
            for move, prior in slots:
                tree.add_child(node, move, prior)
            node.expanded = True
            if not slots:
                self._make_terminal(node, "no_legal_move")

    def _after_writing(self, tree: Tree, node: Node, *, ended: bool, dead_end: bool = False) -> None:
        """Decide whether a freshly written node ends the trace, or is followed by an automatic output."""
        if dead_end:
            self._make_terminal(node, "step_too_long")
        elif node.move is Move.OUTPUT:
            self._make_terminal(node, "output")
        elif ended:
            self._make_terminal(node, "end_of_sequence")
        elif (output := self.policy.automatic_output(node)) is not None:
            child = tree.add_child(node, Move.OUTPUT, 1.0)
            child.content = output
            node.expanded = True
            self._make_terminal(child, "output")
        elif node.depth >= self.config.max_depth:
            self._make_terminal(node, "depth_limit")
        elif tree.trace_tokens(node) >= self.config.max_trace_tokens:
            self._make_terminal(node, "token_budget")

    @staticmethod
    def _make_terminal(node: Node, reason: str) -> None:
        node.terminal, node.terminal_reason = True, reason

    def _score_terminals(self, requests: list[tuple[Tree, Node]]) -> None:
        for (tree, node), scored in zip(requests, self.scorer.score(requests)):
            node.reward, node.correct, node.answer, node.process_reward = (
                scored.value, scored.correct, scored.answer, scored.process_reward)
