"""HTTP/JSON <-> protobuf, the way Envoy's grpc_json_transcoder does it.

A `RequestTranscoder` is compiled once per route: it knows where the body goes, which request
fields the path variables set, and resolves query parameter names to fields (cached). A
`ResponseTranscoder` prints proto3 JSON (lowerCamelCase, defaults omitted, int64 as strings,
enums as names) or passes a google.api.HttpBody through as raw bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf import descriptor, json_format, message_factory

from gateway.path_template import TemplateVariable, percent_decode

HTTP_BODY = "google.api.HttpBody"

# Message types whose proto3 JSON form is a string, so a path or query value can set them.
_STRING_FORM_TYPES = frozenset(
    {
        "google.protobuf.FieldMask",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Value",
    }
)
# Wrappers print as their scalar: a query value sets them like the wrapped field.
_WRAPPER_TYPES = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Unknown query names are resolved again each time; remember this many of them at most.
_MAX_CACHED_UNKNOWN_NAMES = 256

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

Message = Any  # protobuf messages built from a descriptor pool have no static type


class TranscodeError(Exception):
    """The HTTP request cannot become the gRPC request: answered as 400 INVALID_ARGUMENT."""


class RuleError(ValueError):
    """An HttpRule does not fit its request or response message."""


@dataclasses.dataclass(frozen=True, slots=True)
class BoundField:
    """A request field that a path variable or query parameter sets from text."""

    path: tuple[str, ...]  # proto field names from the request message down to the field
    repeated: bool
    convert: Callable[[str], object]  # text -> a value json_format.ParseDict accepts


class BodyMode(enum.Enum):
    NONE = "none"  # the rule has no body; the HTTP body is ignored, as Envoy does
    JSON = "json"  # the JSON body is the message (body "*") or one of its fields
    RAW = "raw"  # the bytes and Content-Type fill a google.api.HttpBody


class RequestTranscoder:
    """Builds the request message of one route from path variables, query and body."""

    def __init__(
        self,
        message: descriptor.Descriptor,
        variables: Sequence[TemplateVariable],
        body: str,
    ) -> None:
        self.message_class: type[Message] = message_factory.GetMessageClass(message)
        self._descriptor = message
        self._path_fields = tuple(_path_variable_field(message, v) for v in variables)
        self._query_fields: dict[str, BoundField | None] = {}
        self._unknown_names = 0
        self.body_mode, self._body_path = _body_target(message, body)
        # The rule's `body` when it names a field ("" for none or "*").
        self.body_field = body if body != "*" else ""
        # What the JSON body is checked against: the request message, or the body field.
        self._json_target: descriptor.Descriptor | descriptor.FieldDescriptor = message
        if self._body_path:
            fields = _walk_fields(message, self._body_path, by_json_name=False)
            assert fields is not None  # _body_target resolved the same path
            leaf = fields[-1]
            self._json_target = leaf.message_type if _is_plain_message(leaf) else leaf

    @property
    def reads_body(self) -> bool:
        return self.body_mode is not BodyMode.NONE

    def build(
        self, variables: Sequence[str], query: str, body: bytes, content_type: str
    ) -> Message:
        """The request message; raises TranscodeError for anything the client got wrong."""
        message = self.message_class()
        has_body = False
        if self.body_mode is BodyMode.JSON and body and not body.isspace():
            self._merge_json_body(message, body)
            has_body = True
        elif self.body_mode is BodyMode.RAW:
            target = message
            for name in self._body_path:
                target = getattr(target, name)
            target.data = body
            target.content_type = content_type
            has_body = True

        bindings: dict[str, Any] = {}
        if query:
            self._bind_query(query, bindings)
        # Path variables come last so that they win over a query parameter of the same field.
        for bound, text in zip(self._path_fields, variables, strict=True):
            try:
                _put(bindings, bound, bound.convert(text))
            except ValueError as error:
                raise TranscodeError(f"invalid path variable {text!r}: {error}") from None
        if bindings:
            target = self.message_class() if has_body else message
            try:
                json_format.ParseDict(bindings, target)
            except Exception as error:  # json_format raises several types; all are client errors
                raise TranscodeError(f"invalid path or query parameter: {_reason(error)}") from None
            if has_body:
                message.MergeFrom(target)
        return message

    def _merge_json_body(self, message: Message, body: bytes) -> None:
        document = parse_json_body(body)
        if not self._body_path and not isinstance(document, dict):
            raise TranscodeError("request body must be a JSON object")
        # Unknown fields are ignored (as Envoy does), but an unknown enum name is a mistake
        # the client must hear about: json_format would silently drop it.
        check_enum_names(document, self._json_target)
        for name in reversed(self._body_path):
            document = {name: document}
        try:
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        except json_format.ParseError as error:
            raise TranscodeError(f"invalid request body: {_reason(error)}") from None
        except Exception:  # TypeError/ValueError/RecursionError on a wrong JSON shape
            raise TranscodeError(
                "invalid request body: a field has the wrong JSON type or nests too deeply"
            ) from None

    def _bind_query(self, query: str, bindings: dict[str, Any]) -> None:
        # Envoy's parsing: `name=value` pairs split on '&', percent-decoded, '+' kept as is.
        for pair in query.split("&"):
            equals = pair.find("=")
            if equals <= 0:
                continue
            name = pair[:equals]
            bound = self._query_field(name)
            if bound is None:
                continue  # unknown query parameters are ignored
            try:
                value = bound.convert(percent_decode(pair[equals + 1 :]))
            except ValueError as error:
                raise TranscodeError(
                    f"invalid value for query parameter {name!r}: {error}"
                ) from None
            _put(bindings, bound, value)

    def _query_field(self, name: str) -> BoundField | None:
        try:
            return self._query_fields[name]
        except KeyError:
            pass
        try:
            bound = resolve_field(self._descriptor, name.split("."))
        except RuleError as error:
            raise TranscodeError(f"query parameter {name!r}: {error}") from None
        if bound is None:
            # Unknown names come from clients: cache a bounded number of them.
            if self._unknown_names >= _MAX_CACHED_UNKNOWN_NAMES:
                return None
            self._unknown_names += 1
        self._query_fields[name] = bound
        return bound


class ResponseTranscoder:
    """Turns the response message (or its `response_body` field) into HTTP bytes."""

    def __init__(self, message: descriptor.Descriptor, response_body: str, pool: Any) -> None:
        self._pool = pool
        self.body_field = response_body
        # Fields to walk down to the message that is printed, and, for a scalar or repeated
        # response_body, the JSON name to pick out of that message's printed form.
        self._walk: tuple[str, ...] = ()
        self._pick: str | None = None
        printed: descriptor.Descriptor | None = message
        if response_body:
            fields = _walk_fields(message, response_body.split("."), by_json_name=False)
            if fields is None:
                raise RuleError(
                    f"response_body {response_body!r} is not a field of {message.full_name}"
                )
            leaf = fields[-1]
            if leaf.message_type is not None and not leaf.is_repeated:
                self._walk = tuple(f.name for f in fields)
                printed = leaf.message_type
            else:
                self._walk = tuple(f.name for f in fields[:-1])
                self._pick = leaf.json_name
                printed = None
        self.raw = printed is not None and printed.full_name == HTTP_BODY

    def encode(self, message: Message) -> tuple[bytes, str]:
        """(body, content type) of a unary response."""
        target = self._target(message)
        if self.raw:
            return bytes(target.data), target.content_type
        return _JSON.encode(self._json_value(target)).encode(), "application/json"

    def encode_stream(self, messages: Iterable[Message]) -> tuple[bytes, str]:
        """Server streaming: a JSON array of the messages, or HttpBody chunks concatenated."""
        targets = [self._target(m) for m in messages]
        if self.raw:
            content_type = targets[0].content_type if targets else ""
            return b"".join(bytes(t.data) for t in targets), content_type
        return _JSON.encode([self._json_value(t) for t in targets]).encode(), "application/json"

    def _target(self, message: Message) -> Message:
        for name in self._walk:
            message = getattr(message, name)
        return message

    def _json_value(self, target: Message) -> object:
        if self._pick is None:
            return json_format.MessageToDict(target, descriptor_pool=self._pool)
        printed = json_format.MessageToDict(
            target, descriptor_pool=self._pool, always_print_fields_with_no_presence=True
        )
        return printed.get(self._pick)


def parse_json_body(body: bytes) -> Any:
    """The JSON document of a request body, as Envoy reads it: UTF-8 only (no UTF-16 or
    UTF-32, no byte order mark). Errors name the problem, never a Python internal."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TranscodeError(
            f"request body is not valid JSON: not UTF-8 (byte {error.start})"
        ) from None
    if text.startswith("\ufeff"):
        raise TranscodeError("request body is not valid JSON: it starts with a byte order mark")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TranscodeError(
            f"request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}"
        ) from None
    except RecursionError:
        raise TranscodeError("request body is not valid JSON: it nests too deeply") from None
    except ValueError:  # e.g. an integer literal with too many digits
        raise TranscodeError("request body is not valid JSON: a number is too long") from None


def check_enum_names(
    document: Any, target: descriptor.Descriptor | descriptor.FieldDescriptor
) -> None:
    """Raises TranscodeError naming the field when an enum field holds a name its enum does
    not have. Numbers are left to json_format (proto3 enums are open)."""
    pending: list[tuple[Any, Any, str]] = []
    if isinstance(target, descriptor.FieldDescriptor):
        pending.append((document, target, target.json_name))
    else:
        pending.extend(_message_members(document, target, ""))
    while pending:
        value, field, path = pending.pop()
        if value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            if isinstance(value, dict):
                pending.extend((v, entry_value, f"{path}[{k!r}]") for k, v in value.items())
            continue
        if field.is_repeated and isinstance(value, list):
            pending.extend(
                (item, _ElementOf(field), f"{path}[{index}]") for index, item in enumerate(value)
            )
            continue
        if field.enum_type is not None:
            if isinstance(value, str) and value not in field.enum_type.values_by_name:
                known = ", ".join(v.name for v in field.enum_type.values)
                shown = value if len(value) <= 64 else value[:64] + "…"
                raise TranscodeError(
                    f"invalid request body: {path}: unknown enum value {shown!r} (one of {known})"
                )
        elif _is_plain_message(field):
            pending.extend(_message_members(value, field.message_type, path + "."))


class _ElementOf:
    """A repeated field seen as one of its elements."""

    __slots__ = ("enum_type", "is_repeated", "json_name", "message_type")

    def __init__(self, field: Any) -> None:
        self.enum_type = field.enum_type
        self.message_type = field.message_type
        self.json_name = field.json_name
        self.is_repeated = False


def _message_members(document: Any, message: descriptor.Descriptor, prefix: str) -> list[Any]:
    if not isinstance(document, dict):
        return []  # a wrong shape: json_format reports it
    members = []
    for key, value in document.items():
        field = message.fields_by_name.get(key) if isinstance(key, str) else None
        if field is None:
            field = next((f for f in message.fields if f.json_name == key), None)
        if field is not None:
            members.append((value, field, prefix + field.json_name))
    return members


def _is_plain_message(field: Any) -> bool:
    """A message field other than a map or a well-known type (whose JSON has its own form)."""
    message = field.message_type
    return (
        message is not None
        and not message.GetOptions().map_entry
        and not message.full_name.startswith("google.protobuf.")
    )


def resolve_field(message: descriptor.Descriptor, names: Sequence[str]) -> BoundField | None:
    """The field a dotted name (proto or JSON names) sets from text; None when it is unknown.

    Raises RuleError when the field exists but cannot be set from text (a message or a map).
    """
    fields = _walk_fields(message, names, by_json_name=True)
    if fields is None:
        return None
    for field in fields[:-1]:
        if field.is_repeated:
            raise RuleError(f"{'.'.join(names)} goes through repeated field {field.name}")
    leaf = fields[-1]
    convert = _text_converter(leaf)
    if convert is None:
        raise RuleError(f"{'.'.join(names)} is a {_kind(leaf)} and cannot be set from text")
    return BoundField(
        path=tuple(f.name for f in fields), repeated=leaf.is_repeated, convert=convert
    )


def _path_variable_field(message: descriptor.Descriptor, variable: TemplateVariable) -> BoundField:
    name = ".".join(variable.field_path)
    bound = resolve_field(message, variable.field_path)
    if bound is None:
        raise RuleError(f"path variable {name!r} is not a field of {message.full_name}")
    return bound


def _body_target(message: descriptor.Descriptor, body: str) -> tuple[BodyMode, tuple[str, ...]]:
    if not body:
        return BodyMode.NONE, ()
    if body == "*":
        return (BodyMode.RAW if message.full_name == HTTP_BODY else BodyMode.JSON), ()
    fields = _walk_fields(message, body.split("."), by_json_name=False)
    if fields is None:
        raise RuleError(f"body {body!r} is not a field of {message.full_name}")
    leaf = fields[-1]
    path = tuple(f.name for f in fields)
    if leaf.message_type is not None and leaf.message_type.full_name == HTTP_BODY:
        if leaf.is_repeated:
            raise RuleError(f"body {body!r} is a repeated google.api.HttpBody")
        return BodyMode.RAW, path
    return BodyMode.JSON, path


def _walk_fields(
    message: descriptor.Descriptor, names: Sequence[str], *, by_json_name: bool
) -> list[descriptor.FieldDescriptor] | None:
    """The fields along a dotted path, or None when a name is not found."""
    fields = []
    current: descriptor.Descriptor | None = message
    for name in names:
        if current is None:
            return None  # the previous field is not a message
        field = current.fields_by_name.get(name)
        if field is None and by_json_name:
            field = next((f for f in current.fields if f.json_name == name), None)
        if field is None:
            return None
        fields.append(field)
        current = field.message_type
    return fields


def _text_converter(field: descriptor.FieldDescriptor) -> Callable[[str], object] | None:
    message_type = field.message_type
    if message_type is None:
        return _parse_bool if field.type == descriptor.FieldDescriptor.TYPE_BOOL else str
    if message_type.GetOptions().map_entry:
        return None
    if message_type.full_name in _STRING_FORM_TYPES:
        return str
    if message_type.full_name in _WRAPPER_TYPES:
        return _text_converter(message_type.fields_by_name["value"])
    return None


def _parse_bool(text: str) -> bool:
    # The protobuf JSON parser Envoy uses accepts exactly these two spellings.
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _put(bindings: dict[str, Any], bound: BoundField, value: object) -> None:
    node = bindings
    for name in bound.path[:-1]:
        node = node.setdefault(name, {})
    if bound.repeated:
        node.setdefault(bound.path[-1], []).append(value)
    else:
        node[bound.path[-1]] = value


def _kind(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return "map"
    return f"message {field.message_type.full_name}" if field.message_type else "field"


def _reason(error: Exception) -> str:
    # json_format's messages name the field; some end in "..", which reads badly in JSON.
    return str(error).rstrip(".")
