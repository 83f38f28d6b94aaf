"""Checking the protocol's dataclasses (studio/protocol/__init__.py): each field against its type hint and
its limits, on build and on parse, with errors that name the field."""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from dataclasses import MISSING, field
from typing import Any


class ProtocolError(ValueError):
    """A line or object that claims to be an event or command but does not fit its dataclass.
    `field` names the key at fault ("" when the line as a whole is wrong)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


def spec(default: Any = MISSING, *, minimum: float | None = None, maximum: float | None = None,
         multiple_of: int | None = None, choices: tuple | None = None,
         non_empty: bool = False) -> Any:
    """A field with the limits its values must keep (checked on build and on parse; the GUI's
    widgets read them with `limits`). No default: the field is required."""
    meta = {k: v for k, v in dict(minimum=minimum, maximum=maximum, multiple_of=multiple_of,
                                  choices=choices, non_empty=non_empty or None).items()
            if v is not None}
    return field(default=default, metadata=meta)


def limits(cls: type, name: str) -> dict[str, Any]:
    """The limits of field `name` of dataclass `cls` (minimum, maximum, multiple_of, choices)."""
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)


# --- Checking values against their type hints ------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(m.value for m in hint)
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false",
            type(None): "null", list: "a list", tuple: "a list", dict: "an object"}.get(
        origin or hint, str(hint))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint`: ints pass as floats, a phase name becomes a Phase, JSON lists
    become tuples where the hint says tuple. Raises ProtocolError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ProtocolError as exc:
                errors.append(exc)
        if value is not None and len(args) == 2 and type(None) in args:
            # X | None given a non-null value: say what is wrong inside X, not "X or null".
            raise errors[args.index(type(None)) ^ 1]
    elif hint is type(None):
        if value is None:
            return None
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            pass
    elif hint is float:
        # bool is an int in Python but never a number on the wire; NaN is not JSON.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                math.isfinite(value):
            return float(value)
    elif hint in (int, str, bool):
        if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in
                         enumerate(zip(value, args)))
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    raise ProtocolError(f"{where} must be {_describe(hint)}, not {value!r}",
                        where.split("[")[0])


def check(obj: Any, what: str) -> None:
    """Coerce and check every field of the frozen dataclass `obj` in place; `what` names the
    event or command in messages ("generate: width must be …")."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        try:
            value = _coerce(getattr(obj, f.name), hints[f.name], f.name)
            _check_limits(f.name, value, f.metadata)
        except ProtocolError as exc:
            raise ProtocolError(f"{what}: {exc}", exc.field) from None
        object.__setattr__(obj, f.name, value)


def _check_limits(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    lo, hi, step = meta.get("minimum"), meta.get("maximum"), meta.get("multiple_of")
    if value is None:
        return
    if meta.get("non_empty") and not (value.strip() if isinstance(value, str) else value):
        raise ProtocolError(f"{name} must not be empty", name)
    if "choices" in meta and value not in meta["choices"]:
        raise ProtocolError(f"{name} must be one of {', '.join(meta['choices'])}, not {value!r}",
                            name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ProtocolError(f"{name} must be between {lo} and {hi}, not {value}", name)
    if step is not None and value % step:
        raise ProtocolError(f"{name} must be a multiple of {step}, not {value}", name)


def from_dict(cls: type, data: dict[str, Any], what: str, every_field: bool) -> Any:
    """Build `cls` from a decoded line: unknown keys and missing fields are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProtocolError(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}",
                            unknown[0])
    for name, f in fields.items():
        required = every_field or (f.default is MISSING and f.default_factory is MISSING)
        if required and name not in data:
            raise ProtocolError(f"{what}: {name} is missing", name)
    return cls(**data)
