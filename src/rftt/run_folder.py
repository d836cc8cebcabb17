"""One contract for every stage's run folder: its settings are recorded on the first run, and a later run in the
same folder continues it only with the same settings (but those allowed to change), else is refused naming them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rftt.config import ConfigError, with_defaults, with_resolved_paths

Settings = dict[str, Any]


@dataclass(frozen=True)
class RunFolder:
    """How a kind of run keeps its settings: the file, the settings that name local files (compared resolved,
    so a rerun from elsewhere continues), those that may change on resume, and any other normalisation."""

    config_file: str
    path_settings: Sequence[str] = ()
    may_change: frozenset[str] = frozenset()
    comparable: Callable[[Settings], Settings] = field(default=lambda settings: settings)


def _compared(folder: Path, config_class: type, settings: Mapping[str, Any],
              contract: RunFolder) -> tuple[Settings, Settings] | None:
    """The settings recorded in `folder` (None when nothing is) and `settings`, both as the contract compares them."""
    path = folder / contract.config_file
    if not path.exists():
        return None
    previous = with_defaults(config_class, json.loads(path.read_text()))
    before, now = (contract.comparable(with_resolved_paths(dict(values), contract.path_settings))
                   for values in (previous, settings))
    return before, now


def changed_settings(folder: Path, config_class: type, settings: Mapping[str, Any], contract: RunFolder,
                     ignore: Sequence[str] = ()) -> list[str]:
    """The top-level settings recorded in `folder` that differ from `settings` (none when nothing is recorded)."""
    compared = _compared(folder, config_class, settings, contract)
    if compared is None:
        return []
    before, now = compared
    skipped = set(ignore) | contract.may_change
    return sorted(key for key in now if key not in skipped and before.get(key) != now[key])


def _differences(before: Any, now: Any, key: str) -> list[str]:
    """Each leaf setting under `key` that differs, with its recorded value and its value now."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [difference for name in sorted(set(before) | set(now))
                for difference in _differences(before.get(name), now.get(name), f"{key}.{name}")]
    return [] if before == now else [f"{key}: {before!r} recorded, {now!r} now"]


def claim_run_folder(folder: Path, config_class: type, settings: Mapping[str, Any], contract: RunFolder) -> None:
    """Continue `folder` with these settings, or refuse naming each setting that differs; then record them."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = changed_settings(folder, config_class, settings, contract)
    if changed:
        before, now = _compared(folder, config_class, settings, contract)
        details = [difference for key in changed for difference in _differences(before.get(key), now[key], key)]
        raise ConfigError(f"{folder} holds a run with different settings ({'; '.join(details)}); "
                          "choose another output folder or delete it")
    record = with_resolved_paths(dict(settings), contract.path_settings)
    (folder / contract.config_file).write_text(json.dumps(record, indent=2) + "\n")
