"""Checks at the API edge; each failure is an InvalidArgument naming the field.

`text` is the one place display text (names, descriptions, file names, prompts) is
checked: besides control characters it refuses the invisible characters that make text
read differently from what it is: bidirectional controls (a right-to-left override turns
"photo\u202egnp.exe" into "photoexe.png") and zero-width characters (which make two
different names look identical).
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TypeVar

from runtime.errors import InvalidArgument

T = TypeVar("T")

# Unicode's bidirectional formatting characters (UAX #9): embeddings, overrides, isolates
# and the implicit marks, plus the Arabic letter mark.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Invisible characters that join, separate or hide nothing a reader can see: zero width
# space, non-joiner, joiner, word joiner, invisible operators, the BOM / zero width
# no-break space, Mongolian vowel separator, the Hangul fillers, and the soft hyphen.
ZERO_WIDTH = frozenset(
    "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u115f\u1160\u3164\uffa0"
)


def invisible_characters(value: str) -> list[str]:
    """The bidirectional controls and zero-width characters in `value`, as U+XXXX."""
    return [f"U+{ord(c):04X}" for c in value if c in BIDI_CONTROLS or c in ZERO_WIDTH]


def text(
    value: str,
    field: str,
    *,
    max_length: int,
    min_length: int = 1,
    required: bool = True,
    single_line: bool = True,
) -> str:
    """A trimmed, NFC-normalized string without NUL, control characters, bidirectional
    controls or zero-width characters."""
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
    hidden = invisible_characters(value)
    if hidden:
        raise InvalidArgument(
            field,
            "must not contain bidirectional controls or zero-width characters "
            f"(found {', '.join(sorted(set(hidden)))})",
        )
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


def enum_value(
    value: int, field: str, valid: AbstractSet[int], *, allow_unspecified: bool = True
) -> int:
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


# The `Idempotency-Key` HTTP header, which the gateway (and Envoy) forward as this gRPC
# metadata key, and the one rule for every idempotency key a service is given (the
# header, or an `idempotency_key` request field): 1-255 printable ASCII characters,
# taken exactly as sent. Never trimmed, normalized or cut short: two keys that differ
# anywhere are two keys. 255 is what the columns that store keys hold
# (assets.assets.idempotency_key, presets.presets.idempotency_key: varchar(255)).
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_METADATA = "idempotency-key"
IDEMPOTENCY_KEY_MAX = 255
_IDEMPOTENCY_KEY_RULE = f"must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters"


def idempotency_key(value: str | bytes, field: str) -> str | None:
    """An optional `idempotency_key` request field: empty is absent (None); anything
    else follows the one rule or is an InvalidArgument naming `field`."""
    if isinstance(value, str) and not value:
        return None
    return _checked_key(value, field)


def required_idempotency_key(value: str | bytes, field: str) -> str:
    """A required `idempotency_key` request field (service-to-service calls)."""
    key = idempotency_key(value, field)
    if key is None:
        raise InvalidArgument(field, "is required")
    return key


def idempotency_key_header(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The `Idempotency-Key` header of a call (its `invocation_metadata()`): None when it
    was not sent; sent, it must be sent once and follow the one rule (an empty value is
    refused, not taken for absent), or it is an InvalidArgument naming the header."""
    values = [value for key, value in metadata or () if key == IDEMPOTENCY_KEY_METADATA]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(IDEMPOTENCY_KEY_HEADER, "must be sent once")
    return _checked_key(values[0], IDEMPOTENCY_KEY_HEADER)


def _checked_key(value: str | bytes, field: str) -> str:
    if isinstance(value, bytes) or not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidArgument(field, _IDEMPOTENCY_KEY_RULE)
    if not all(" " <= c <= "~" for c in value):
        raise InvalidArgument(field, "must hold printable ASCII characters only")
    return value
