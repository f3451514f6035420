"""Typed configs: dataclasses filled from plain dicts or YAML, every value checked against its annotation.

``from_dict(cls, data, where)`` refuses unknown and missing keys by name, then checks each value against
the field's annotation (resolved with ``typing.get_type_hints``):

- ``int``: a whole number; ``5.0`` is read as 5, ``5.5``, ``True`` and ``'abc'`` are refused.
- ``float``: any number (ints too), finite unless the field opts in (``checked(..., nonfinite=True)``).
- ``bool``: only true/false (never 0/1 or a string).
- ``str``: a string (a ``pathlib.Path`` is taken as its string).
- ``X | None``, unions, ``list``/``list[X]``, ``dict``/``dict[str, X]``, nested dataclass sections (a
  mapping, checked the same way, errors naming the full key path ``optim.lr``); ``Any`` is unchecked.

YAML 1.1 (PyYAML) reads ``5e-1`` and ``1e-3`` (no dot, or no exponent sign) as *strings*: for a number
field a string in scientific notation is taken as the number it spells; any other string is refused.

Ranges and choices are declared next to the field: ``timestep_fs: float = checked(0.5, gt=0)``,
``engine: str = checked("gpu", choices=("gpu", "ase"))``; they apply to the value, or to every element
of a list / value of a mapping. Cross-field rules stay in ``__post_init__``. Every error is one
``MLFFError`` line: ``md.yaml: steps = 'abc' is not an int``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mlff.errors import MLFFError

__all__ = ["DEVICE_CHOICES", "check_device", "checked", "device_setting", "from_dict", "load_yaml"]

T = TypeVar("T")

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # what YAML 1.1 leaves as a string
_NONE = type(None)


def checked(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, gt=None, ge=None, lt=None,
            le=None, choices=None, pattern: str | None = None, expected: str | None = None,
            nonfinite: bool = False):
    """A dataclass field with declared checks: bounds ``gt``/``ge``/``lt``/``le``, ``choices`` (a tuple),
    ``pattern`` (a regular expression the whole string must match, described by ``expected``), and
    ``nonfinite=True`` to let NaN/inf through. ``from_dict`` enforces them."""
    meta = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le), ("choices", choices),
                              ("pattern", pattern), ("expected", expected)) if v is not None}
    if nonfinite:
        meta["nonfinite"] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def device_setting(default: str = "auto"):
    """A ``device`` field: auto | cpu | cuda | cuda:N."""
    return checked(default, pattern=_DEVICE.pattern, expected=DEVICE_CHOICES)


def check_device(device, key: str = "device") -> str:
    """``device`` if it names a device (auto, cpu, cuda, cuda:N), else one clear error."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise MLFFError(f"{key} = {device!r} is not a device; expected {DEVICE_CHOICES}")
    return device


class _Bad(Exception):
    """Internal: ``key = value <phrase>``; ``mismatch`` marks a wrong type (a union tries its next member)."""

    def __init__(self, key: str, value, phrase: str, mismatch: bool = False):
        super().__init__(phrase)
        self.key, self.value, self.phrase, self.mismatch = key, value, phrase, mismatch


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(tp) -> str:
    """'an int', 'a float or null', 'a list of floats', ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_describe(a) for a in args if a is not _NONE] + (["null"] if _NONE in args else [])
        return " or ".join(names)
    plural = {int: "ints", float: "numbers", str: "strings", bool: "bools"}
    if origin is list and args:
        return f"a list of {plural[args[0]]}" if args[0] in plural else "a list"
    if origin is dict and len(args) == 2:
        return f"a mapping to {plural[args[1]]}" if args[1] in plural else "a mapping"
    names = {int: "an int", float: "a float", bool: "a bool (true or false)", str: "a string", list: "a list",
             dict: "a mapping", _NONE: "null"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return f"a {getattr(tp, '__name__', tp)}"


def _number(value, key: str, tp):
    """``value`` as a Python number if it is one (not a bool); strings in scientific notation count."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
        raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
    return value.item() if hasattr(value, "item") else value


def _is_numpy_number(value) -> bool:
    import numpy as np

    return isinstance(value, (np.integer, np.floating)) and not isinstance(value, np.bool_)


def _coerce(value, tp, key: str, meta: Mapping, where: str):
    """``value`` converted to ``tp`` (see the module docstring) or ``_Bad``."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return _coerce(value, arg, key, meta, where)
            except _Bad as bad:
                if not bad.mismatch:
                    raise
        raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
    if tp in (bool, int, float, str):
        return _scalar(value, tp, key, meta)
    if (origin or tp) is list:
        if not isinstance(value, (list, tuple)):
            raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
        return [_coerce(v, args[0], f"{key}[{i}]", meta, where) for i, v in enumerate(value)] if args else list(value)
    if (origin or tp) is dict:
        if not isinstance(value, Mapping):
            raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
        if len(args) != 2:
            return dict(value)
        return {k: _coerce(v, args[1], f"{key}.{k}", meta, where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
        return _build(tp, value, where, prefix=f"{key}.")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
    return value


def _scalar(value, tp, key: str, meta: Mapping):
    """``value`` as a bool, int, float or str, or ``_Bad``."""
    if tp is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
    if tp is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise _Bad(key, value, f"is not {_describe(tp)}", mismatch=True)
    number = _number(value, key, tp)
    if tp is float:
        number = float(number)
        if not math.isfinite(number) and not meta.get("nonfinite"):
            raise _Bad(key, value, "is not a finite number")
    elif isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise _Bad(key, value, "is not an int", mismatch=True)
        number = int(number)
    return number


def _check_range(value, meta: Mapping, key: str) -> None:
    """The declared bounds / choices / pattern, on the value or on each element of a list or mapping."""
    if value is None or not meta:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(v, meta, f"{key}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_range(v, meta, f"{key}.{k}")
        return
    if "choices" in meta and value not in meta["choices"]:
        raise _Bad(key, value, f"must be one of: {', '.join(map(str, meta['choices']))}")
    if "pattern" in meta and not (isinstance(value, str) and re.fullmatch(meta["pattern"], value)):
        raise _Bad(key, value, f"is not one of {meta.get('expected', meta['pattern'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, symbol, ok in (("gt", ">", lambda b: value > b), ("ge", ">=", lambda b: value >= b),
                                 ("lt", "<", lambda b: value < b), ("le", "<=", lambda b: value <= b)):
            if name in meta and not ok(meta[name]):
                raise _Bad(key, value, f"must be {symbol} {meta[name]}")


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception as err:  # noqa: BLE001 - a programming error in a config class, named
        raise TypeError(f"cannot resolve the annotations of {cls.__name__}: {err}") from err


def _build(cls: type[T], data, where: str, prefix: str = "") -> T:
    if not isinstance(data, Mapping):
        raise _Bad(prefix.rstrip(".") or "config", data, "is not a mapping of keys to values", mismatch=True)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        raise MLFFError(f"{where}: unknown key {prefix + unknown[0]!r}; expected one of: {', '.join(sorted(names))}")
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise MLFFError(f"{where}: missing required key {prefix + missing[0]!r}")
    hints = _hints(cls)
    values = {}
    for f in fields:
        if f.name in data:
            key = prefix + f.name
            values[f.name] = _coerce(data[f.name], hints.get(f.name, Any), key, f.metadata, where)
            _check_range(values[f.name], f.metadata, key)
    try:
        return cls(**values)
    except MLFFError as err:  # a cross-field rule of __post_init__
        message = str(err)
        raise MLFFError(message if message.startswith(where) else f"{where}: {message}") from None


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**data)`` after checking every key and value; ``where`` (a file name, "md config") starts
    every error message."""
    try:
        return _build(cls, {} if data is None else data, where)
    except _Bad as bad:
        raise MLFFError(f"{where}: {bad.key} = {_show(bad.value)} {bad.phrase}") from None


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
