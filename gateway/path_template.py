"""google.api.http path templates: parsing, and binding variables from a matched request path.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Like Envoy, segments after a `**` are allowed when they are literals (`/a/**/b`), and variable
values are percent-decoded: fully for one segment, all but RFC 6570 reserved characters for
values spanning several segments (Envoy's default `ALL_CHARACTERS_EXCEPT_RESERVED`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

SINGLE_WILDCARD = "*"
MULTI_WILDCARD = "**"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_RESERVED = frozenset(b"!#$&'()*+,/:;=?@[]")


class TemplateError(ValueError):
    """A path template does not follow the HttpRule grammar."""


@dataclasses.dataclass(frozen=True, slots=True)
class TemplateVariable:
    """`{field.path=...}`: binds template segments [start, end) to a request field."""

    field_path: tuple[str, ...]
    start: int
    end: int
    # Spans several segments or a `**`: reserved characters stay percent-encoded.
    multi_segment: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template: literal segments, wildcards, an optional verb and its variables."""

    source: str
    segments: tuple[str, ...]
    verb: str
    variables: tuple[TemplateVariable, ...]
    # Index of the `**` segment, if any: segments after it are counted from the path's end.
    multi_index: int | None

    @classmethod
    def parse(cls, source: str) -> PathTemplate:
        if not source.startswith("/"):
            raise TemplateError(f"path template {source!r} must start with '/'")
        text, verb = _split_verb(source[1:], source)
        segments: list[str] = []
        variables: list[TemplateVariable] = []
        i = 0
        while i < len(text):
            if text[i] == "{":
                close = text.find("}", i)
                if close == -1:
                    raise TemplateError(f"unclosed '{{' in path template {source!r}")
                name, has_pattern, pattern = text[i + 1 : close].partition("=")
                field_path = tuple(name.split("."))
                if not all(_IDENT.match(part) for part in field_path):
                    raise TemplateError(f"bad variable name {name!r} in path template {source!r}")
                sub_segments = pattern.split("/") if has_pattern else [SINGLE_WILDCARD]
                start = len(segments)
                for segment in sub_segments:
                    segments.append(_check_segment(segment, source))
                variables.append(
                    TemplateVariable(
                        field_path=field_path,
                        start=start,
                        end=len(segments),
                        multi_segment=len(sub_segments) > 1 or MULTI_WILDCARD in sub_segments,
                    )
                )
                i = close + 1
            else:
                slash = text.find("/", i)
                end = len(text) if slash == -1 else slash
                segments.append(_check_segment(text[i:end], source))
                i = end
            if i < len(text):
                if text[i] != "/":
                    raise TemplateError(f"expected '/' at {i + 1} in path template {source!r}")
                i += 1
                if i == len(text):
                    raise TemplateError(f"path template {source!r} ends with '/'")
        multi = [index for index, segment in enumerate(segments) if segment == MULTI_WILDCARD]
        if len(multi) > 1:
            raise TemplateError(f"path template {source!r} has more than one '**'")
        if multi and SINGLE_WILDCARD in segments[multi[0] + 1 :]:
            raise TemplateError(f"only literal segments may follow '**' in {source!r}")
        names = [v.field_path for v in variables]
        if len(set(names)) != len(names):
            raise TemplateError(f"path template {source!r} binds a field twice")
        return cls(
            source=source,
            segments=tuple(segments),
            verb=verb,
            variables=tuple(variables),
            multi_index=multi[0] if multi else None,
        )

    def bind(self, parts: Sequence[str]) -> tuple[str, ...]:
        """Values of the variables, in order, for request path parts this template matched."""
        if not self.variables:
            return ()
        values = []
        for variable in self.variables:
            start = self._part_index(variable.start, len(parts))
            end = self._part_index(variable.end, len(parts))
            if variable.multi_segment:
                values.append(
                    "/".join(percent_decode(p, keep_reserved=True) for p in parts[start:end])
                )
            else:
                values.append(percent_decode(parts[start]))
        return tuple(values)

    def _part_index(self, index: int, part_count: int) -> int:
        if self.multi_index is None or index <= self.multi_index:
            return index
        return part_count - (len(self.segments) - index)


def percent_decode(text: str, *, keep_reserved: bool = False) -> str:
    """Decodes %XX escapes as UTF-8; raises ValueError when the result is not UTF-8."""
    if "%" not in text:
        return text

    def replace(match: re.Match[bytes]) -> bytes:
        byte = int(match.group(1), 16)
        if keep_reserved and byte in _RESERVED:
            return match.group(0)
        return bytes((byte,))

    return _PERCENT.sub(replace, text.encode("utf-8")).decode("utf-8")


def _split_verb(text: str, source: str) -> tuple[str, str]:
    """Splits `a/b:verb` into (`a/b`, `verb`); a ':' inside `{...}` is not a verb."""
    colon = text.rfind(":")
    if colon == -1 or colon < text.rfind("/") or colon < text.rfind("}"):
        return text, ""
    verb = text[colon + 1 :]
    if not verb or "{" in verb:
        raise TemplateError(f"bad custom verb in path template {source!r}")
    return text[:colon], verb


def _check_segment(segment: str, source: str) -> str:
    if not segment:
        raise TemplateError(f"empty segment in path template {source!r}")
    if segment not in (SINGLE_WILDCARD, MULTI_WILDCARD) and any(c in segment for c in "{}*"):
        raise TemplateError(f"bad segment {segment!r} in path template {source!r}")
    return segment
