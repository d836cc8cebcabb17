"""Append-only JSON-lines files that survive a crash: records are flushed and synced in groups,
and a last line cut short by a kill is dropped when the file is read back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def read_records(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (none if it does not exist).

    A line that does not parse ends the read; with `repair`, the file is cut back to the
    complete records, so appending can go on after a crash mid-write.
    """
    path = Path(path)
    if not path.exists():
        return []
    records, kept_bytes = [], 0
    with path.open("rb") as file:
        for line in file:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            kept_bytes += len(line)
    if repair and kept_bytes != path.stat().st_size:
        with path.open("r+b") as file:
            file.truncate(kept_bytes)
    return records


def append_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one JSON line each, and make them durable before returning."""
    with Path(path).open("a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
