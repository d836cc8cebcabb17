"""Shape rules the training code keeps: no function in `rftt.train` takes more than five parameters besides
`self` (a step's data travels as one `Experience`, a checkpoint's as one `TrainingState`)."""

from __future__ import annotations

import ast
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[1] / "src" / "rftt" / "train"
MOST_PARAMETERS = 5


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    named = [argument.arg for argument in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    starred = [f"*{argument.arg}" for argument in (arguments.vararg, arguments.kwarg) if argument is not None]
    return [name for name in named if name not in ("self", "cls")] + starred


def test_no_training_function_takes_more_than_five_parameters():
    too_many = [f"{path.name}:{node.lineno} {node.name}({', '.join(parameters(node))})"
                for path in sorted(TRAIN.glob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(parameters(node)) > MOST_PARAMETERS]
    assert too_many == []
