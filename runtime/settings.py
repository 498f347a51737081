"""Typed settings read once from the environment (twelve-factor), then passed down.

A settings class is a frozen dataclass; `load_settings(cls, prefix)` reads each field
from `PREFIX_FIELD_NAME`, converts it to the field's type and fails with one message
naming every bad or missing variable. Fields marked `shared()` also fall back to
`PIXELSHOP_FIELD_NAME`, for values all services have in common (the service credential
key, the token issuer). `Secret` values never print.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

SHARED_PREFIX = "PIXELSHOP_"

T = TypeVar("T")


class Secret:
    """A string that never shows up in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """Raised at start-up when the environment does not describe a valid configuration."""


def shared(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that also reads `PIXELSHOP_<NAME>` when the service-specific variable is unset."""
    metadata = {"shared": True, **kwargs.pop("metadata", {})}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _convert(raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw == "":
            return None
        return _convert(raw, options[0])
    if kind is Secret:
        return Secret(raw)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("expected true or false")
    if kind is int:
        return int(raw.replace("_", ""))
    if kind is float:
        return float(raw)
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is str:
        return raw
    raise TypeError(f"unsupported settings type {kind!r}")


def load_settings(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Builds `cls` from the environment; raises SettingsError naming every bad variable."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        names = [f"{prefix}{field.name.upper()}"]
        if field.metadata.get("shared"):
            names.append(f"{SHARED_PREFIX}{field.name.upper()}")
        name = next((n for n in names if n in env), None)
        if name is None:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                problems.append(f"{names[0]} is required")
            continue
        try:
            values[field.name] = _convert(env[name], hints[field.name])
        except (ValueError, TypeError) as error:
            problems.append(f"{name} is invalid: {error}")
    if problems:
        raise SettingsError("; ".join(problems))
    try:
        return cls(**values)
    except ValueError as error:  # __post_init__ checks
        raise SettingsError(str(error)) from error
