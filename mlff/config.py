"""Typed configs: dataclasses filled from plain dicts or YAML, unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mlff.errors import MLFFError

__all__ = ["from_dict", "load_yaml"]

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """``cls(**data)`` after checking every key; ``where`` names the config in error messages."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise MLFFError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise MLFFError(f"{where}: unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(fields))}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise MLFFError(f"{where}: missing required key {missing[0]!r}")
    return cls(**data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a missing file or bad YAML is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise MLFFError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MLFFError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise MLFFError(f"{path}: expected a mapping at the top level")
    return data
