"""Expansion policies: who proposes the next moves of a node (with priors) and who writes a step.

- `PromptedPolicy` (phase 1): an instruct model writes each move's content from a prompt
  written for that move; every legal move gets `candidates` child slots with equal priors.
  A written step that states a `\\boxed{}` answer is followed by an automatic `<output>`.
- `TokenGuidedPolicy` (phase 2 and inference): the policy's own probabilities of the legal
  opening tokens after the trace are the priors, and the policy writes each step itself
  until it closes it, so the trace is exactly what the model would generate.

Both write through the engine's stream (`EngineWriter`): the search hands over nodes of
every tree as they need writing and gets each step back as soon as it is written.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from rftt.engine.base import Engine
from rftt.engine.types import Completion, Prompt, SamplingParams, StreamRequest
from rftt.prompts import get_template
from rftt.search.tree import Node, Tree
from rftt.tokens import Move, legal_next_moves
from rftt.verify.extract import extract_answer

if TYPE_CHECKING:
    from rftt.tokens.vocabulary import StepTags

PHASE_ONE_MOVES = (Move.CLARIFY, Move.ANALYZE, Move.SUBQUESTION, Move.NEXT_STEP, Move.DIRECT_ANSWER, Move.OUTPUT)
ANSWERING_MOVES = (Move.NEXT_STEP, Move.DIRECT_ANSWER)
SINGLE_CANDIDATE_MOVES = (Move.DIRECT_ANSWER, Move.OUTPUT)

MOVE_INSTRUCTIONS: dict[Move, str] = {
    Move.CLARIFY: "Restate the question in one sentence, saying exactly what is asked. Do not solve it.",
    Move.ANALYZE: "In one sentence, say how to approach the rest of the problem. Do not calculate anything.",
    Move.SUBQUESTION: "Ask the next smaller question that has to be answered. Write only that question.",
    Move.NEXT_STEP: "Write only the next step of the solution: one short calculation and its result. If it gives "
                    "the final answer, end with: The answer is \\boxed{ANSWER}.",
    Move.DIRECT_ANSWER: "Solve the rest of the problem in a few short calculations and end with: "
                        "The answer is \\boxed{ANSWER}.",
    Move.OUTPUT: "Give only the final answer, as \\boxed{ANSWER}.",
}


@dataclass(frozen=True)
class MoveExample:
    """A worked example of one move: a question, the steps before the move, and what the move writes."""

    question: str
    steps: tuple[tuple[Move, str], ...]
    content: str


_BRACKET = "Calculate 23 - ( 5 - 11 )."
MOVE_EXAMPLES: dict[Move, tuple[MoveExample, ...]] = {
    Move.CLARIFY: (MoveExample(_BRACKET, (), "We need 23 minus the value of ( 5 - 11 )."),),
    Move.ANALYZE: (MoveExample(_BRACKET, (), "First work out the bracket, then subtract its value from 23."),),
    Move.SUBQUESTION: (MoveExample(_BRACKET, (), "What is 5 - 11?"),),
    Move.NEXT_STEP: (MoveExample("Calculate 7 - 12.", (), "7 - 12 = -5. The answer is \\boxed{-5}."),
                     MoveExample(_BRACKET, ((Move.NEXT_STEP, "5 - 11 = -6."),),
                                 "23 - (-6) = 23 + 6 = 29. The answer is \\boxed{29}.")),
    Move.DIRECT_ANSWER: (MoveExample(_BRACKET, (), "5 - 11 = -6, and 23 - (-6) = 23 + 6 = 29. "
                                                   "The answer is \\boxed{29}."),),
    Move.OUTPUT: (MoveExample("Calculate 7 - 12.", ((Move.NEXT_STEP, "7 - 12 = -5."),), "\\boxed{-5}"),),
}
"""Shown to the model as earlier turns of the chat, before the real question: small instruct models copy a
shown turn far better than they follow a described format (SmolLM2-135M on arithmetic, one-step prompt, 4
samples each for 48 problems: 15.6% of samples correctly boxed with a system instruction and one example
turn, 3.1-4.2% with the instruction and examples inside the user message)."""
PROMPTED_STEP_TOKENS: dict[Move, int] = {
    Move.CLARIFY: 48, Move.ANALYZE: 48, Move.SUBQUESTION: 32, Move.NEXT_STEP: 64, Move.DIRECT_ANSWER: 128, Move.OUTPUT: 16}
"""Longest step per move; a longer step is a dead end (small models ramble when they lose the thread)."""


@dataclass(frozen=True)
class WrittenStep:
    """A step's content as a policy wrote it. `ended`: the model ended the whole answer inside the step;
    `dead_end`: the step is unusable (cut at its length limit, for a policy that says so) and ends its trace."""

    content: str
    token_ids: list[int] = field(default_factory=list)
    generated_tokens: int = 0
    ended: bool = False
    truncated: bool = False
    dead_end: bool = False


StepFeed = Callable[[], Sequence[tuple[Tree, Node]]]
"""Hands a policy the next nodes to write; an empty answer means none are ready yet."""


class ExpansionPolicy(Protocol):
    def moves_and_priors(self, requests: Sequence[tuple[Tree, Node]]) -> list[list[tuple[Move, float]]]:
        """For each node, the child slots to create: (move, prior) pairs, legal after the node's move."""

    def write(self, requests: Sequence[tuple[Tree, Node]]) -> list[WrittenStep]:
        """The content of each (not yet written) node."""

    def automatic_output(self, node: Node) -> str | None:
        """Content of an `<output>` step to add right after a written node, or None."""


class EngineWriter:
    """Writes steps through an engine's stream, so the search can hand over new nodes while earlier ones are
    still being written. Identical prompts with the same limit (sibling candidates of one move) become one
    request sampled n times, so their prefill is done once. Subclasses say what each step's prompt is, how
    it is sampled, and what a completion means as a step."""

    engine: Engine
    max_tokens: dict[Move, int]

    def step_prompt(self, tree: Tree, node: Node) -> Prompt:
        raise NotImplementedError

    def sampling(self) -> SamplingParams:
        """How every step is sampled; `max_new_tokens` is the longest step, each move has its own limit."""
        raise NotImplementedError

    def written_step(self, node: Node, completion: Completion) -> WrittenStep:
        raise NotImplementedError

    def write(self, requests: Sequence[tuple[Tree, Node]]) -> list[WrittenStep]:
        pending = [list(requests)]
        written = {(id(tree), node.id): step
                   for tree, node, step in self.write_stream(lambda: pending.pop() if pending else [])}
        return [written[(id(tree), node.id)] for tree, node in requests]

    def write_stream(self, feed: StepFeed) -> Iterator[tuple[Tree, Node, WrittenStep]]:
        """Write the nodes `feed` hands over, yielding each as soon as it is written."""
        owners: list[list[tuple[Tree, Node]]] = []

        def requests() -> list[StreamRequest]:
            groups: dict[tuple[Any, int], list[tuple[Tree, Node]]] = defaultdict(list)
            prompts: dict[tuple[Any, int], Prompt] = {}
            for tree, node in feed():
                prompt = self.step_prompt(tree, node)
                key = (prompt if isinstance(prompt, str) else tuple(prompt), self.max_tokens[node.move])
                groups[key].append((tree, node))
                prompts[key] = prompt
            owners.extend(groups.values())
            return [StreamRequest(prompts[key], len(members), key[1]) for key, members in groups.items()]

        for number, sample, completion in self.engine.stream(requests, self.sampling()):
            tree, node = owners[number][sample]
            yield tree, node, self.written_step(node, completion)


def _step_message(question: str, steps: Sequence[tuple[Move, str]]) -> str:
    listed = "\n".join(f"{number}. ({move.value}) {content.strip()}" for number, (move, content) in enumerate(steps, 1))
    return f"Question: {question}\nSteps so far:\n{listed or 'none'}"


@dataclass
class PromptedPolicy(EngineWriter):
    """Phase 1: an instruct model prompted per move (the model of `engine`, its `tokenizer`'s chat template)."""

    engine: Engine
    tokenizer: Any
    moves: tuple[Move, ...] = PHASE_ONE_MOVES
    candidates: int = 2
    temperature: float = 0.7
    max_tokens: dict[Move, int] = field(default_factory=lambda: dict(PROMPTED_STEP_TOKENS))
    instructions: dict[Move, str] = field(default_factory=lambda: dict(MOVE_INSTRUCTIONS))
    examples: dict[Move, tuple[MoveExample, ...]] = field(default_factory=lambda: dict(MOVE_EXAMPLES))
    end_truncated_steps: bool = True
    seed: int | None = None

    def moves_and_priors(self, requests: Sequence[tuple[Tree, Node]]) -> list[list[tuple[Move, float]]]:
        slots = []
        for _, node in requests:
            moves = [move for move in legal_next_moves(node.move) if move in self.moves]
            copies = [(move, 1 if move in SINGLE_CANDIDATE_MOVES else self.candidates) for move in moves]
            total = sum(count for _, count in copies)
            slots.append([(move, 1.0 / total) for move, count in copies for _ in range(count)])
        return slots

    def step_prompt(self, tree: Tree, node: Node) -> str:
        """A chat: the move's instruction as the system message, its worked examples as earlier turns, then the
        question and the steps so far."""
        assert node.move is not None
        earlier = tree.steps(tree.nodes[node.parent]) if node.parent is not None else []
        messages = [{"role": "system", "content": self.instructions[node.move]}]
        for example in self.examples.get(node.move, ()):
            messages += [{"role": "user", "content": _step_message(example.question, example.steps)},
                         {"role": "assistant", "content": example.content}]
        messages.append({"role": "user", "content": _step_message(tree.question, [(step.move, step.content)
                                                                                  for step in earlier])})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, max_new_tokens=max(self.max_tokens.values()), seed=self.seed)

    def written_step(self, node: Node, completion: Completion) -> WrittenStep:
        truncated = completion.finish_reason == "length"
        return WrittenStep(completion.text.strip(), [], len(completion.token_ids), truncated=truncated,
                           dead_end=truncated and self.end_truncated_steps)

    def automatic_output(self, node: Node) -> str | None:
        if node.move not in ANSWERING_MOVES or node.content is None:
            return None
        answer = extract_answer(node.content, last_number_fallback=False)
        return f"\\boxed{{{answer}}}" if answer is not None else None


TOKEN_GUIDED_TOP_P = 0.95
TOKEN_GUIDED_STEP_TOKENS = 256
"""The token-guided policy's nucleus and step length where its stage has none of its own (`rftt search`)."""


@dataclass(frozen=True)
class TreePolicyConfig:
    """How the token-guided policy grows trees, the same settings in RL's tree rollouts, tree-search evaluation
    and `rftt search --set policy=token_guided`. `temperature`, `top_p`: the steps' sampling (unset: the stage's
    own); `step_max_tokens`: the longest step (unset: the stage's `max_new_tokens`); `max_children`: only the
    moves with the highest priors get child slots (unset: every legal move), so that rollouts are not spent on
    moves the warm-up never taught; `sampled_children: n`: each node gets n slots whose moves are drawn from the
    priors."""

    temperature: float | None = None
    top_p: float | None = None
    step_max_tokens: int | None = None
    max_children: int | None = None
    sampled_children: int | None = None

    def policy_settings(self, temperature: float, top_p: float, max_new_tokens: int) -> dict[str, Any]:
        """`TokenGuidedPolicy` keyword arguments, the stage's `temperature`, `top_p` and `max_new_tokens` filling
        what is unset."""
        def own(value: Any, stage: Any) -> Any:
            return stage if value is None else value

        return {"temperature": own(self.temperature, temperature), "top_p": own(self.top_p, top_p),
                "max_tokens": {move: own(self.step_max_tokens, max_new_tokens) for move in Move},
                "max_children": self.max_children, "sampled_children": self.sampled_children}


@dataclass
class TokenGuidedPolicy(EngineWriter):
    """Phase 2 and inference: the policy ranks moves by the probability of their opening tags after the trace
    and writes each step itself (`step_tags`: functional tokens, or the same tags as text for the ablation).
    Child slots: one per legal move (the `max_children` likeliest when set); with `sampled_children: n`, n
    slots whose moves are drawn from the priors instead, so the tree branches where the policy itself would
    sample differently (a likely move gets several slots, an untaught one rarely any). An `<output>` only
    restates its path's answer, so it gets one slot however often it is drawn."""

    engine: Engine
    tokenizer: Any
    step_tags: StepTags
    template: str = "functional"
    temperature: float = 0.1
    top_p: float = TOKEN_GUIDED_TOP_P
    max_children: int | None = None
    sampled_children: int | None = None
    max_tokens: dict[Move, int] = field(default_factory=lambda: {move: TOKEN_GUIDED_STEP_TOKENS for move in Move})
    seed: int | None = None

    def __post_init__(self) -> None:
        self.move_draws = random.Random(self.seed)

    def prefix_ids(self, tree: Tree, node: Node) -> list[int]:
        """Token ids of the prompt and every step down to `node` (the exact sequence the policy continues)."""
        prompt = get_template(self.template).render(tree.question, self.tokenizer)
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        for step in tree.path(node):
            ids.extend(step.token_ids)
        return ids

    def moves_and_priors(self, requests: Sequence[tuple[Tree, Node]]) -> list[list[tuple[Move, float]]]:
        legal = [legal_next_moves(node.move) for _, node in requests]
        union = sorted({move for moves in legal for move in moves}, key=list(Move).index)
        logprobs = self.step_tags.opening_logprobs(self.engine.next_token_logprobs,
                                                   [self.prefix_ids(*request) for request in requests], union)
        slots = []
        for moves, row in zip(legal, logprobs):
            scores = {move: row[union.index(move)] for move in moves}
            top = max(scores.values())
            weights = {move: math.exp(score - top) if math.isfinite(score) else 0.0 for move, score in scores.items()}
            total = sum(weights.values())
            priors = {move: weight / total if total else 1.0 / len(moves) for move, weight in weights.items()}
            slots.append(self.child_slots(sorted(moves, key=lambda move: -priors[move])[: self.max_children or
                                                                                       len(moves)], priors))
        return slots

    def child_slots(self, ranked: list[Move], priors: dict[Move, float]) -> list[tuple[Move, float]]:
        """(move, prior) per child slot: one per ranked move, or `sampled_children` draws from the priors (a
        move drawn k times gets k slots sharing its prior)."""
        if not self.sampled_children:
            return [(move, priors[move]) for move in ranked]
        weights = [priors[move] for move in ranked]
        counts = Counter(self.move_draws.choices(ranked, weights=weights if sum(weights) > 0 else None,
                                                 k=self.sampled_children))
        if Move.OUTPUT in counts:
            counts[Move.OUTPUT] = 1
        return [(move, priors[move] / counts[move]) for move in ranked for _ in range(counts[move])]

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=max(self.max_tokens.values()),
                              seed=self.seed, **self.step_tags.stops())

    def step_prompt(self, tree: Tree, node: Node) -> list[int]:
        return self.prefix_ids(tree, node) + self.step_tags.opening(node.move)

    def written_step(self, node: Node, completion: Completion) -> WrittenStep:
        """The step as token ids. A step ends at any step tag: one closed by any closing tag, or cut short
        by an opening tag (the model wants a new step; the search decides which), or at the length limit, is
        closed with its own closing tag; a step in which the model ended its answer keeps the end-of-sequence
        token, unclosed."""
        tags, move = self.step_tags, node.move
        ended = completion.finish_reason == "stop" and not tags.ends_step(completion.stop_reason)
        content_ids = tags.content_ids(completion, self.tokenizer)
        if ended:
            token_ids = [*tags.opening(move), *completion.token_ids]
        else:
            token_ids = [*tags.opening(move), *content_ids, *tags.closing(move)]
        content = self.tokenizer.decode(content_ids, skip_special_tokens=False)
        return WrittenStep(content, token_ids, len(completion.token_ids), ended=ended,
                           truncated=completion.finish_reason == "length")

    def automatic_output(self, node: Node) -> str | None:
        return None
