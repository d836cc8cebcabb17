"""Typed configuration: dataclasses filled from YAML recipes and `key.sub=value` overrides.

Unknown keys and values of the wrong type are errors that name the file and the dotted
key, so a typo in a recipe never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar, Union

import yaml

from rftt.errors import RfttError

_YAML_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

Config = TypeVar("Config")
RENAMED_KEYS = "renamed_keys"
"""A config class may map keys of its older versions to their dotted places now (`renamed_keys: ClassVar[...]`):
recipes that use the old names still load, with a warning that names the new one."""
RENAMED_VALUES = "renamed_values"
"""Likewise for values: `renamed_values: ClassVar[...]` maps a key to {old value: value now}."""
FORMER_DEFAULTS = "former_defaults"
"""And `former_defaults: ClassVar[...]`: {dotted key: value} that versions with the old names used without
recording them, given to run settings saved under the old names, so a run folder is compared by what it did."""


class ConfigError(RfttError):
    """A configuration value that is unknown, missing or of the wrong type."""


def configured_device(key: str, name: str) -> Any:
    """A stage's `device` setting as a torch device (`rftt.precision.resolve_device`); a bad one is a ConfigError
    naming the key."""
    from rftt.precision import resolve_device

    try:
        return resolve_device(name)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def configured_training_precision(key: str, precision: str, model: str) -> str:
    """What a training stage set to `precision` computes in (`auto` resolved by how `model` is stored: see
    `rftt.precision.training_precision`); one it cannot train in is a ConfigError naming the key."""
    from rftt.models import stored_dtype
    from rftt.precision import training_precision

    try:
        return training_precision(precision, stored_dtype(model) if precision == "auto" else None)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def trainer_device(key: str, name: str) -> Any:
    """A device setting for the Hugging Face Trainer, which computes on every GPU it sees: `cuda:N` among
    several GPUs is refused with how to choose one (CUDA_VISIBLE_DEVICES)."""
    import torch

    device = configured_device(key, name)
    if device.type == "cuda" and device.index is not None and torch.cuda.device_count() > 1:
        raise ConfigError(f"{key}: {name} — the trainer uses every GPU it can see; choose one with "
                          f"CUDA_VISIBLE_DEVICES={device.index} and {key.rsplit('.', 1)[-1]}: cuda")
    return device


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """`value` checked against (and, for nested dataclasses and tuples, converted to) `annotation`."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        errors = []
        for option in (argument for argument in arguments if argument is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(annotation)}")
    if origin is typing.Literal:
        if value not in arguments:
            raise ConfigError(f"{where}: {value!r} is not one of {list(arguments)}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {annotation.__name__} settings, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (dict, Mapping) or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = arguments[0] if arguments else Any
        items = [_convert(item, item_type, f"{where}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _YAML_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `1e-6` (no dot) as a string
    if isinstance(annotation, type) and not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
    return value


@lru_cache(maxsize=None)
def _field_types(cls: type | None) -> dict[str, Any]:
    """A config dataclass's fields and their types (read once per class: configs are walked level by level)."""
    return typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}


def _nested_config(annotation: Any) -> type | None:
    """The config dataclass a field holds (also through `X | None`), else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((option for option in options if dataclasses.is_dataclass(option)), None)


def _place(data: dict[str, Any], dotted: str, value: Any) -> str | None:
    """Set `dotted` in `data` (copying the sections on the way) to the value an old key held; what stops it, when
    something does, setting nothing."""
    *sections, leaf = dotted.split(".")
    target = data
    for part in sections:
        inner = target.get(part, {})
        if not isinstance(inner, Mapping):
            return f"its section {part} is {inner!r}, not a mapping of settings"
        target[part] = dict(inner)
        target = target[part]
    if leaf in target:
        return "both are set"
    target[leaf] = value
    return None


def current_names(cls: type, data: Mapping[str, Any], source: str = "config", prefix: str = "",
                  saved: bool = False) -> dict[str, Any]:
    """`data` (read from `source`, at `prefix` in the whole config) with the keys that `cls` and the configs
    nested in it renamed moved to their new places, each move warned about with both names; an old and a new
    name for one setting in the same source is an error. `saved`: `data` is what a run recorded, so where it
    uses old names it gets the class's former defaults."""
    moved: dict[str, Any] = dict(data)
    renamed = getattr(cls, RENAMED_KEYS, {})
    if saved and renamed.keys() & moved.keys():
        for dotted, value in getattr(cls, FORMER_DEFAULTS, {}).items():
            _place(moved, dotted, value)
    for old, new in renamed.items():
        if old not in moved:
            continue
        problem = _place(moved, new, moved.pop(old))
        if problem:
            raise ConfigError(f"{source}: {prefix}{old} is the old name of {prefix}{new}, and {problem}; "
                              f"set {prefix}{new} only")
        warnings.warn(f"{source}: {prefix}{old} is now {prefix}{new} (the old name still loads; rename it)",
                      FutureWarning, stacklevel=2)
    for key, values in getattr(cls, RENAMED_VALUES, {}).items():
        value = moved.get(key)
        if isinstance(value, str) and value in values:
            moved[key] = values[value]
            warnings.warn(f"{source}: {prefix}{key}: {value} is now {values[value]} (the old value still loads)",
                          FutureWarning, stacklevel=2)
    hints = _field_types(cls)
    for name, value in moved.items():
        nested = _nested_config(hints.get(name))
        if nested is not None and isinstance(value, Mapping):
            moved[name] = current_names(nested, value, source, f"{prefix}{name}.", saved)
    return moved


def from_dict(cls: type[Config], data: Mapping[str, Any], where: str = "config") -> Config:
    """An instance of dataclass `cls` from a mapping (keys renamed since older versions moved to their new
    names); unknown keys and wrong types raise ConfigError."""
    data = current_names(cls, data, where)
    known = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; known keys: {', '.join(known)}")
    hints = _field_types(cls)
    values = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain data (tuples as lists), ready for YAML or JSON."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested `data` to `value`, creating sections on the way."""
    parts = key.strip().split(".")
    target = data
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"setting {key!r}: {part} is not a section")
    target[parts[-1]] = value


def current_key(cls: type | None, dotted: str, source: str) -> str:
    """A dotted key of `cls` under today's names (a renamed part replaced by its new place, with a warning)."""
    parts, renamed = dotted.strip().split("."), []
    while parts:
        part = parts.pop(0)
        new = getattr(cls, RENAMED_KEYS, {}).get(part)
        if new is not None:
            warnings.warn(f"{source}: {'.'.join(renamed + [part])} is now {'.'.join(renamed + [new])} (the old name "
                          "still loads; rename it)", FutureWarning, stacklevel=3)
            *sections, part = new.split(".")
            for section in sections:
                renamed.append(section)
                cls = _nested_config(_field_types(cls).get(section))
        renamed.append(part)
        hints = _field_types(cls)
        cls = _nested_config(hints.get(part))
    return ".".join(renamed)


def apply_override(data: dict[str, Any], override: str, cls: type | None = None) -> None:
    """Set `a.b.c=value` in nested `data` (a key `cls` renamed at its new place); the value is read as YAML
    (numbers, booleans, lists)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value, for example engine.kind=openai")
    key, raw_value = override.split("=", 1)
    set_dotted(data, current_key(cls, key, f"setting {override!r}"), yaml.safe_load(raw_value) if raw_value.strip() else None)


def load_config(cls: type[Config], path: str | Path | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None) -> Config:
    """A config from defaults, then `base`, then a YAML file, then command-line `flags`, then
    `key=value` overrides (each later one wins)."""
    data: dict[str, Any] = merge_settings({}, current_names(cls, base or {}))
    where = "config"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read the recipe ({error})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of settings, got {type(loaded).__name__}")
        data = merge_settings(data, current_names(cls, loaded, where))
    data = merge_settings(data, current_names(cls, flags or {}))
    for override in overrides:
        apply_override(data, override, cls)
    return from_dict(cls, data, where)


def with_defaults(cls: type, saved: Mapping[str, Any]) -> dict[str, Any]:
    """Settings saved by an older version of `cls`, under today's names, with the defaults of the settings added
    since, at any depth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return merge_settings(to_dict(cls()), current_names(cls, saved, saved=True))


def with_resolved_paths(settings: dict[str, Any], dotted_keys: Sequence[str]) -> dict[str, Any]:
    """Settings with the values at `dotted_keys` (`model`, `dataset.path`) made absolute where they name local
    files, so that `../data` and `/work/data` name the same run when a run folder checks its settings."""
    resolved = dict(settings)
    for dotted in dotted_keys:
        head, _, rest = dotted.partition(".")
        value = resolved.get(head)
        if rest and isinstance(value, dict):
            resolved[head] = with_resolved_paths(value, [rest])
        elif not rest and isinstance(value, str) and Path(value).exists():
            resolved[head] = str(Path(value).resolve())
    return resolved


def merge_settings(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`into` with `update` laid over it at every depth (a later layer of settings wins)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge_settings(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
    return into
