"""The eight reasoning moves of RFTT and the grammar of which move may follow which."""

from __future__ import annotations

from enum import Enum


class Move(str, Enum):
    """A reasoning move; each becomes an opening and a closing functional token."""

    CLARIFY = "clarify"
    ANALYZE = "analyze"
    SUBQUESTION = "subquestion"
    NEXT_STEP = "next_step"
    DIRECT_ANSWER = "direct_answer"
    VERIFY = "verify"
    REFINE = "refine"
    OUTPUT = "output"

    @property
    def words(self) -> str:
        """The move's name in plain words, used to initialise its token embeddings."""
        return self.value.replace("_", " ")

    @property
    def opening_tag(self) -> str:
        return f"<{self.value}>"

    @property
    def closing_tag(self) -> str:
        return f"</{self.value}>"


MOVE_DESCRIPTIONS: dict[Move, str] = {
    Move.CLARIFY: "restate the question and what is asked",
    Move.ANALYZE: "one or two sentences of strategy, no calculation",
    Move.SUBQUESTION: "pose a sub-problem to solve next",
    Move.NEXT_STEP: "carry out one reasoning step",
    Move.DIRECT_ANSWER: "finish the whole solution in one go",
    Move.VERIFY: "check the previous steps and say what is wrong",
    Move.REFINE: "backtrack and correct",
    Move.OUTPUT: "state the final answer, as \\boxed{...}",
}

# Legal next moves, from the authors' released RL code; `None` is the start of a trace.
LEGAL_NEXT_MOVES: dict[Move | None, tuple[Move, ...]] = {
    None: (Move.CLARIFY, Move.SUBQUESTION, Move.ANALYZE, Move.NEXT_STEP),
    Move.CLARIFY: (Move.ANALYZE, Move.SUBQUESTION, Move.NEXT_STEP, Move.DIRECT_ANSWER),
    Move.ANALYZE: (Move.SUBQUESTION, Move.NEXT_STEP, Move.DIRECT_ANSWER),
    Move.SUBQUESTION: (Move.NEXT_STEP, Move.DIRECT_ANSWER),
    Move.NEXT_STEP: (Move.NEXT_STEP, Move.DIRECT_ANSWER, Move.SUBQUESTION, Move.VERIFY, Move.OUTPUT),
    Move.DIRECT_ANSWER: (Move.OUTPUT, Move.VERIFY),
    Move.VERIFY: (Move.NEXT_STEP, Move.REFINE, Move.DIRECT_ANSWER, Move.SUBQUESTION, Move.VERIFY, Move.OUTPUT),
    Move.REFINE: (Move.NEXT_STEP, Move.DIRECT_ANSWER, Move.OUTPUT, Move.SUBQUESTION, Move.VERIFY),
    Move.OUTPUT: (),
}

TERMINAL_MOVES: frozenset[Move] = frozenset({Move.OUTPUT})


def legal_next_moves(previous: Move | None) -> tuple[Move, ...]:
    """Moves allowed after `previous` (`None` at the start); empty after a terminal move."""
    return LEGAL_NEXT_MOVES[previous]


def first_illegal_step(moves: list[Move]) -> int | None:
    """Index of the first move the grammar forbids after its predecessor, or None if all are legal."""
    previous: Move | None = None
    for index, move in enumerate(moves):
        if move not in LEGAL_NEXT_MOVES[previous]:
            return index
        previous = move
    return None


def is_legal_trace(moves: list[Move], *, require_terminal: bool = False) -> bool:
    """True when every move may follow its predecessor (and, if asked, the trace ends with `<output>`)."""
    if first_illegal_step(moves) is not None:
        return False
    return not require_terminal or (bool(moves) and moves[-1] in TERMINAL_MOVES)


def parse_move(name: str) -> Move:
    """The move named `name` ("analyze", "<analyze>", "next step"), or a ValueError listing the valid names."""
    key = name.strip().strip("<>/").strip().replace(" ", "_").lower()
    try:
        return Move(key)
    except ValueError:
        valid = ", ".join(move.value for move in Move)
        raise ValueError(f"unknown functional token {name!r}; valid moves: {valid}") from None
