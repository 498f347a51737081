"""Checks at the API edge; each failure is an InvalidArgument naming the field."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from typing import TypeVar

from runtime.errors import InvalidArgument

T = TypeVar("T")


def text(
    value: str,
    field: str,
    *,
    max_length: int,
    min_length: int = 1,
    required: bool = True,
    single_line: bool = True,
) -> str:
    """A trimmed, NFC-normalized string without NUL or control characters."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) < min_length:
        raise InvalidArgument(field, f"must be at least {min_length} characters")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    allowed = {"\n", "\t"} if not single_line else set()
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def uuid_field(value: str, field: str, *, required: bool = True) -> uuid.UUID | None:
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError) as error:
        raise InvalidArgument(field, "must be a UUID") from error
    if len(value) not in (32, 36):  # reject braces, urn: prefixes and the like
        raise InvalidArgument(field, "must be a UUID")
    return parsed


def required_uuid(value: str, field: str) -> uuid.UUID:
    parsed = uuid_field(value, field)
    assert parsed is not None
    return parsed


def page_size(value: int, *, default: int = 50, maximum: int = 100) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if value == 0:
        return default
    return min(value, maximum)


def enum_value(value: int, field: str, valid: set[int], *, allow_unspecified: bool = True) -> int:
    """Rejects numbers a proto3 enum field can carry but the enum does not define."""
    if value == 0 and allow_unspecified:
        return value
    if value not in valid or value == 0:
        raise InvalidArgument(field, f"unknown value {value}")
    return value


def choice(value: str, field: str, options: Mapping[str, T], *, default: T) -> T:
    """One of a few names, case-insensitive (e.g. `orderBy=popular`); empty means default."""
    key = value.strip().lower()
    if not key:
        return default
    if key not in options:
        names = ", ".join(sorted(name for name in options if name == name.lower()))
        raise InvalidArgument(field, f"must be one of {names}")
    return options[key]
