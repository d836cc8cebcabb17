"""Read JSON and JSONL files row by row, keeping each row's line number for error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from rftt.data.records import DataError, Row

_WHITESPACE = " \t\r\n"


def read_rows(path: str | Path) -> Iterator[Row | DataError]:
    """Rows of a `.jsonl` file (one object a line) or a `.json` file (an array of objects).

    A line of JSONL that is not valid JSON comes back as a DataError in its place, so the
    caller can skip it; a JSON array that cannot be parsed at all raises.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(text, str(path))
    elif path.suffix == ".json":
        yield from _json_array_rows(text, str(path))
    else:
        raise DataError(str(path), None, None, "unsupported file type: use .json (an array) or .jsonl")


def _jsonl_rows(text: str, location: str) -> Iterator[Row | DataError]:
    index = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        index += 1
        try:
            yield Row(json.loads(line), location, number, index - 1)
        except json.JSONDecodeError as error:
            yield DataError(location, number, None, f"not valid JSON ({error.msg} at column {error.colno})")


def _json_array_rows(text: str, location: str) -> Iterator[Row]:
    """Walk a JSON array element by element with `raw_decode`, counting lines as we go."""
    decoder = json.JSONDecoder()
    position = _skip_whitespace(text, 0)
    if position >= len(text) or text[position] != "[":
        raise DataError(location, _line_of(text, position), None, "expected a JSON array of records")
    position = _skip_whitespace(text, position + 1)
    line, counted_to, index = 1, 0, 0
    while position < len(text) and text[position] != "]":
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise DataError(location, error.lineno, None, f"not valid JSON ({error.msg})") from None
        yield Row(value, location, line, index)
        index += 1
        position = _skip_whitespace(text, end)
        if position < len(text) and text[position] == ",":
            position = _skip_whitespace(text, position + 1)
        elif position < len(text) and text[position] != "]":
            raise DataError(location, _line_of(text, position), None, "expected ',' or ']' between records")
    if position >= len(text):
        raise DataError(location, _line_of(text, position), None, "the JSON array is not closed")


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1
