"""The one record shape every dataset is loaded into, and the error a malformed row raises."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from rftt.errors import RfttError
from rftt.verify.outcome import Gold, GoldFormat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A problem with its gold answer; `solution` is a worked solution when the dataset has one."""

    id: str
    question: str
    answer: str
    source: str
    solution: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    gold_format: GoldFormat = "auto"

    @property
    def gold(self) -> Gold:
        """The gold answer with the format its dataset declares, as the verifier takes it."""
        return Gold(self.answer, self.gold_format)


class DataError(RfttError, ValueError):
    """A row that cannot become a Problem; the message names the file, the line and the field."""

    def __init__(self, location: str, line: int | None, field_name: str | None, problem: str, unit: str = "line"):
        self.location, self.line, self.field_name, self.problem = location, line, field_name, problem
        where = location + (f" {unit} {line}" if line is not None else "")
        what = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}: {what}{problem}")


class Problems(list):
    """A list of Problems that also remembers the rows skipped as malformed (`skip_bad=True`)."""

    def __init__(self, problems: Iterable[Problem] = (), skipped: Iterable[DataError] = ()):
        super().__init__(problems)
        self.skipped: list[DataError] = list(skipped)


@dataclass(frozen=True)
class Row:
    """A raw record read from a source: its position (`index`, from 0) and where it came from."""

    data: Any
    location: str
    line: int | None
    index: int
    unit: str = "line"

    def error(self, field_name: str | None, problem: str) -> DataError:
        return DataError(self.location, self.line, field_name, problem, self.unit)

    def text(self, field_name: str) -> str:
        """The non-empty string (or number, as text) under `field_name`."""
        if not isinstance(self.data, Mapping):
            raise self.error(None, f"expected an object with fields, got {type(self.data).__name__}")
        if field_name not in self.data or self.data[field_name] is None:
            raise self.error(field_name, "missing")
        value = self.data[field_name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(field_name, f"expected text or a number, got {type(value).__name__}")
        text = str(value).strip()
        if not text:
            raise self.error(field_name, "empty")
        return text

    def optional_text(self, field_name: str) -> str | None:
        if not isinstance(self.data, Mapping) or self.data.get(field_name) in (None, ""):
            return None
        return self.text(field_name)


def convert_rows(
    rows: Iterable[Row | DataError], to_problem: Callable[[Row], Problem], *, skip_bad: bool
) -> Problems:
    """Turn rows into Problems; a bad row (or one a reader could not parse) raises, or with
    `skip_bad` is counted and logged."""
    problems, skipped = [], []
    for row in rows:
        try:
            if isinstance(row, DataError):
                raise row
            problems.append(to_problem(row))
        except DataError as error:
            if not skip_bad:
                raise
            skipped.append(error)
    if skipped:
        logger.warning("skipped %d malformed rows; first: %s", len(skipped), skipped[0])
    return Problems(problems, skipped)
