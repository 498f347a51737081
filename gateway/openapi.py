"""OpenAPI 3.1 for the HTTP API, generated from the descriptor set the gateway routes with.

Every HTTP binding (additional_bindings too) becomes an operation exactly as the transcoder
maps it (gateway/transcoder.py): path variables, query parameters for the fields neither
the path nor the body binds (dotted names for nested fields, repeated fields as arrays),
the JSON body (`body: "*"` or one field) or raw bytes for a google.api.HttpBody. Schemas
are proto3 JSON: lowerCamelCase names, 64-bit integers as strings, enums by name, the
well-known types in their JSON forms; `field_behavior` REQUIRED and OUTPUT_ONLY become
`required` and `readOnly`. Descriptions are the proto comments.

`make proto` writes gen/openapi.json (tools/openapi.py); the gateway serves the same
document, built from its own descriptor set, at /openapi.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor

from gateway import edge
from gateway.descriptors import DescriptorSet
from gateway.routes import Route, RouteTable
from gateway.transcoder import HTTP_BODY, BodyMode

OPENAPI_VERSION = "3.1.0"
STATUS_SCHEMA = "google.rpc.Status"
BEARER = "bearer"
_REF = "#/components/schemas/"
_MEDIA_TYPE = re.compile(r"\b((?:image|application|text|audio|video)/[a-z0-9.+\-*]+)")
_FD = descriptor.FieldDescriptor

_INTEGER_32 = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32}
_UNSIGNED_32 = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_INTEGER_64 = {
    _FD.TYPE_INT64,
    _FD.TYPE_SINT64,
    _FD.TYPE_SFIXED64,
    _FD.TYPE_UINT64,
    _FD.TYPE_FIXED64,
}

# The well-known types, in their proto3 JSON forms.
_WELL_KNOWN: Mapping[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths.",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
}

_ERROR_DESCRIPTIONS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the request is wrong.",
    401: "UNAUTHENTICATED: the access token is missing, expired or invalid.",
    403: "PERMISSION_DENIED: the caller may not do this.",
    404: "NOT_FOUND: no such resource (another user's private one looks the same), or no route.",
    408: "The request headers or body did not arrive in time.",
    409: "ALREADY_EXISTS or ABORTED: a conflict; reread and retry.",
    413: "The request body is larger than the limit.",
    415: "The request body is compressed (Content-Encoding is not accepted).",
    429: "RESOURCE_EXHAUSTED: a rate limit or quota; see Retry-After.",
    431: "The request headers are too large.",
    500: "INTERNAL, UNKNOWN or DATA_LOSS.",
    501: "UNIMPLEMENTED.",
    503: "UNAVAILABLE: a service or the gateway is overloaded or down; see Retry-After.",
    504: "DEADLINE_EXCEEDED: the call took longer than its deadline.",
}


class Comments:
    """Leading comments of messages, fields, enums, values, services and methods by full name."""

    def __init__(self, files: Iterable[Any]) -> None:
        self._by_name: dict[str, str] = {}
        for file in files:
            locations = {
                tuple(loc.path): loc.leading_comments.strip()
                for loc in file.source_code_info.location
                if loc.leading_comments.strip()
            }
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(locations, message, (4, i), prefix)
            for i, enum in enumerate(file.enum_type):
                self._enum(locations, enum, (5, i), prefix)
            for i, service in enumerate(file.service):
                name = prefix + service.name
                self._put(name, locations.get((6, i)))
                for j, method in enumerate(service.method):
                    self._put(f"{name}.{method.name}", locations.get((6, i, 2, j)))

    def _put(self, name: str, comment: str | None) -> None:
        if comment:
            self._by_name[name] = " ".join(line.strip() for line in comment.splitlines())

    def _message(self, locations: Any, message: Any, path: tuple[int, ...], prefix: str) -> None:
        name = prefix + message.name
        self._put(name, locations.get(path))
        for k, field in enumerate(message.field):
            self._put(f"{name}.{field.name}", locations.get((*path, 2, k)))
        for j, nested in enumerate(message.nested_type):
            self._message(locations, nested, (*path, 3, j), name + ".")
        for j, enum in enumerate(message.enum_type):
            self._enum(locations, enum, (*path, 4, j), name + ".")

    def _enum(self, locations: Any, enum: Any, path: tuple[int, ...], prefix: str) -> None:
        name = prefix + enum.name
        self._put(name, locations.get(path))
        for k, value in enumerate(enum.value):
            self._put(f"{name}.{value.name}", locations.get((*path, 2, k)))

    def get(self, full_name: str) -> str:
        return self._by_name.get(full_name, "")


def _behaviors(field: Any) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _media_types(text: str, default: str) -> list[str]:
    """Media types named in the proto comments; `image/*` when they speak of an image."""
    found = list(dict.fromkeys(_MEDIA_TYPE.findall(text)))
    if not found and re.search(r"\bimages?\b", text, re.IGNORECASE):
        found = ["image/*"]
    return found or [default]


class OpenApiBuilder:
    def __init__(self, descriptors: DescriptorSet, routes: RouteTable) -> None:
        self._pool = descriptors.pool
        self._routes = routes
        self._comments = Comments(descriptors.files)
        self._schemas: dict[str, Any] = {}
        self._pending: list[Any] = []

    # --- schemas --------------------------------------------------------------------------

    def _ref(self, message_or_enum: Any) -> dict[str, Any]:
        name = message_or_enum.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self._schemas:
            self._schemas[name] = None  # placeholder: filled by _drain
            self._pending.append(message_or_enum)
        return {"$ref": _REF + name}

    def _drain(self) -> None:
        while self._pending:
            item = self._pending.pop()
            if isinstance(item, descriptor.EnumDescriptor):
                self._schemas[item.full_name] = self._enum_schema(item)
            else:
                self._schemas[item.full_name] = self._message_schema(item)

    def _enum_schema(self, enum: Any) -> dict[str, Any]:
        lines = [self._comments.get(enum.full_name)]
        lines += [
            f"- `{v.name}`: {self._comments.get(f'{enum.full_name}.{v.name}')}".rstrip(": ")
            for v in enum.values
        ]
        schema: dict[str, Any] = {
            "type": "string",
            "enum": [v.name for v in enum.values],
            "description": "\n".join(line for line in lines if line),
        }
        return schema

    def _message_schema(self, message: Any, *, without: frozenset[str] = frozenset()) -> Any:
        if message.full_name == HTTP_BODY:
            return {"type": "string", "contentMediaType": "application/octet-stream"}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            if field.name in without:
                continue
            schema = self._field_schema(field)
            behaviors = _behaviors(field)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema["readOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.json_name)
            comment = self._comments.get(f"{message.full_name}.{field.name}")
            if field.containing_oneof is not None and not field.containing_oneof.name.startswith(
                "_"
            ):
                members = ", ".join(f.json_name for f in field.containing_oneof.fields)
                comment = f"{comment} (At most one of: {members}.)".strip()
            if comment:
                schema = {**schema, "description": comment}
            properties[field.json_name] = schema
        result: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            result["required"] = required
        description = self._comments.get(message.full_name)
        if description:
            result["description"] = description
        return result

    def _field_schema(self, field: Any) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single_schema(value)}
        single = self._single_schema(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single_schema(self, field: Any) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:
            return self._ref(field.message_type)
        if field.enum_type is not None:
            return self._ref(field.enum_type)
        if kind in _INTEGER_32:
            return {"type": "integer", "format": "int32"}
        if kind in _UNSIGNED_32:
            return {"type": "integer", "format": "int64", "minimum": 0}
        if kind in _INTEGER_64:
            fmt = "uint64" if kind in (_FD.TYPE_UINT64, _FD.TYPE_FIXED64) else "int64"
            return {"type": "string", "format": fmt, "pattern": r"^-?[0-9]+$"}
        if kind == _FD.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if kind == _FD.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        if kind == _FD.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == _FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    # --- operations -----------------------------------------------------------------------

    def _query_parameters(
        self, message: Any, skip: frozenset[str], prefix: str = "", seen: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Fields set from the query string, as the transcoder resolves dotted names."""
        parameters = []
        for field in message.fields:
            if not prefix and field.name in skip:
                continue
            name = prefix + field.json_name
            message_type = field.message_type
            if message_type is not None and message_type.GetOptions().map_entry:
                continue  # maps cannot be set from text
            if message_type is not None and message_type.full_name not in _WELL_KNOWN:
                if field.is_repeated or message_type.full_name in seen or len(seen) > 4:
                    continue
                parameters += self._query_parameters(
                    message_type, skip, name + ".", (*seen, message_type.full_name)
                )
                continue
            schema = self._field_schema(field)
            parameter: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
            comment = self._comments.get(f"{message.full_name}.{field.name}")
            if comment:
                parameter["description"] = comment
            if field.is_repeated:
                parameter.update(style="form", explode=True)
            parameters.append(parameter)
        return parameters

    def _operation(self, route: Route, operation_id: str) -> dict[str, Any]:
        method_descriptor = self._pool.FindMethodByName(route.method.full_name)
        request = method_descriptor.input_type
        comment = self._comments.get(route.method.full_name)
        service = method_descriptor.containing_service
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [service.name],
            "summary": comment.split(". ")[0].rstrip(".") if comment else route.method.full_name,
        }
        if comment:
            operation["description"] = comment
        path_fields = {v.field_path[0] for v in route.template.variables}
        parameters = [
            {
                "name": ".".join(v.field_path),
                "in": "path",
                "required": True,
                "schema": self._path_schema(request, v.field_path),
            }
            for v in route.template.variables
        ]
        for wildcard in _openapi_path(route)[1]:
            parameters.append(
                {"name": wildcard, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        body_mode = route.request.body_mode
        body_field = route.request.body_field
        if body_mode is BodyMode.NONE or body_field:
            skip = frozenset(path_fields | ({body_field.split(".")[0]} if body_field else set()))
            parameters += self._query_parameters(request, skip)
        if parameters:
            operation["parameters"] = parameters
        if body_mode is BodyMode.JSON:
            if body_field:
                leaf = request.fields_by_name[body_field]
                schema = self._field_schema(leaf)
            elif path_fields:
                name = f"{request.full_name}.Body"
                self._schemas[name] = self._message_schema(request, without=frozenset(path_fields))
                schema = {"$ref": _REF + name}
            else:
                schema = self._ref(request)
            operation["requestBody"] = {
                "required": bool(body_field),
                "content": {"application/json": {"schema": schema}},
            }
        elif body_mode is BodyMode.RAW:
            text = comment + " " + self._comments.get(f"{request.full_name}.{body_field}")
            operation["requestBody"] = {
                "required": True,
                "description": "The raw bytes; their Content-Type is passed on with them.",
                "content": {
                    media: {"schema": {"type": "string", "contentMediaType": media}}
                    for media in _media_types(text, "application/octet-stream")
                },
            }
        operation["responses"] = self._responses(route, method_descriptor, comment)
        if route.method.full_name not in edge.ANONYMOUS_RPCS:
            operation["security"] = [{BEARER: []}]
        else:
            operation["security"] = []
        return operation

    def _path_schema(self, request: Any, field_path: tuple[str, ...]) -> dict[str, Any]:
        message = request
        field = None
        for name in field_path:
            field = message.fields_by_name[name]
            message = field.message_type
        assert field is not None
        return self._single_schema(field)

    def _responses(self, route: Route, method: Any, comment: str) -> dict[str, Any]:
        output = method.output_type
        headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
        if route.method.full_name in self._no_store:
            headers["Cache-Control"] = {
                "description": "`no-store`: the answer carries a credential.",
                "schema": {"type": "string", "const": edge.NO_STORE},
            }
        if route.response.raw:
            content = {
                media: {"schema": {"type": "string", "contentMediaType": media}}
                for media in _media_types(comment, "application/octet-stream")
            }
        else:
            body_field = route.response.body_field
            if body_field:
                fields = body_field.split(".")
                message = output
                leaf = None
                for name in fields:
                    leaf = message.fields_by_name[name]
                    message = leaf.message_type
                schema = self._field_schema(leaf)
            else:
                schema = self._ref(output)
            if route.method.server_streaming:
                schema = {"type": "array", "items": schema}
            content = {"application/json": {"schema": schema}}
        responses: dict[str, Any] = {
            "200": {"description": "OK", "headers": headers, "content": content}
        }
        for status in sorted(self._error_codes(route)):
            responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
        return responses

    def _error_codes(self, route: Route) -> set[int]:
        codes = {400, 404, 500, 503, 504}
        if route.request.reads_body:
            codes |= {408, 413, 415}
        if route.method.full_name not in edge.ANONYMOUS_RPCS:
            codes |= {401, 403, 429}
        if route.method.full_name in self._rate_limited:
            codes.add(429)
        if route.http_method != "GET":
            codes.add(409)
        return codes

    # --- the document ---------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        self._no_store = {
            r.method.full_name for r in self._routes.routes if r.method.carries_credentials
        }
        self._rate_limited: set[str] = set()
        for limit in edge.EDGE.rate_limits:
            bound = self._routes.methods_bound_under(limit.http_path_prefix)
            self._rate_limited |= bound
            if bound & self._no_store:
                self._no_store |= bound
        paths: dict[str, dict[str, Any]] = {}
        methods = {r.method.full_name for r in self._routes.routes}
        short = [name.rsplit(".", 1)[1] for name in methods]
        used: dict[str, int] = {}
        tags: dict[str, str] = {}
        for route in self._routes.routes:
            service_name, name = route.method.full_name.rsplit(".", 2)[1:]
            if short.count(name) > 1:  # two services with an RPC of the same name
                name = f"{service_name}_{name}"
            used[name] = used.get(name, 0) + 1
            # additional_bindings: the RPC name, then _2, _3... (operationIds are unique)
            operation_id = name if used[name] == 1 else f"{name}_{used[name]}"
            path = _openapi_path(route)[0]
            verb = route.http_method.lower()
            if verb not in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                continue  # custom HTTP methods cannot be described in OpenAPI
            paths.setdefault(path, {})[verb] = self._operation(route, operation_id)
            service = self._pool.FindMethodByName(route.method.full_name).containing_service
            tags[service.name] = self._comments.get(service.full_name)
        self._ref(self._pool.FindMessageTypeByName(STATUS_SCHEMA))
        self._drain()
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "Pixelshop API",
                "version": "v1",
                "description": (
                    "HTTP/JSON API of the Pixelshop backend, transcoded to gRPC by the gateway "
                    "(Envoy's grpc_json_transcoder in production). Generated from the protos; "
                    "errors are google.rpc.Status JSON."
                ),
            },
            "servers": [{"url": "/"}],
            "tags": [
                {"name": name, "description": text} if text else {"name": name}
                for name, text in sorted(tags.items())
            ],
            "paths": dict(sorted(paths.items())),
            "components": {
                "securitySchemes": {
                    BEARER: {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "The accessToken from sign-up, log-in or refresh.",
                    }
                },
                "headers": {
                    "X-Request-Id": {
                        "description": "The request id (the client's, or a new UUID).",
                        "schema": {"type": "string"},
                    },
                    "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "schema": {"type": "integer"},
                    },
                },
                "responses": {
                    f"Error{status}": self._error_response(status)
                    for status in sorted(_ERROR_DESCRIPTIONS)
                },
                "schemas": dict(sorted(self._schemas.items())),
            },
        }

    def _error_response(self, status: int) -> dict[str, Any]:
        response: dict[str, Any] = {
            "description": _ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": _REF + STATUS_SCHEMA}}},
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        return response


def _openapi_path(route: Route) -> tuple[str, list[str]]:
    """`/v1/projects/{project_id}:undo` from the template (variables by field path), and the
    names given to wildcards outside variables (`_1`, `_2`...)."""
    segments = list(route.template.segments)
    for variable in reversed(route.template.variables):
        segments[variable.start : variable.end] = ["{" + ".".join(variable.field_path) + "}"]
    wildcards: list[str] = []
    for index, segment in enumerate(segments):
        if segment in ("*", "**"):
            wildcards.append(f"_{len(wildcards) + 1}")
            segments[index] = "{" + wildcards[-1] + "}"
    verb = f":{route.template.verb}" if route.template.verb else ""
    return "/" + "/".join(segments) + verb, wildcards


def build(descriptors: DescriptorSet, routes: RouteTable | None = None) -> dict[str, Any]:
    """The OpenAPI document (a plain dict) for every HTTP binding in the descriptor set."""
    return OpenApiBuilder(
        descriptors, routes or RouteTable.from_descriptor_set(descriptors)
    ).build()


def dump(document: Mapping[str, Any]) -> str:
    """The text written to gen/openapi.json (stable: the builder orders everything)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
