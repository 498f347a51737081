"""HTTP routes compiled from google.api.http rules, and matching a request to one.

Matching follows Envoy's path matcher: the request path (without its query) is split into
segments, trailing empty segments are dropped, and a `:verb` suffix of the last segment counts
as a verb only when some template declares that verb. A trie is then searched depth first,
trying a literal segment before `*` before `**`, backtracking when a branch has no route for
the HTTP method. No match is a 404, also when the path exists for another method.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from google.api import annotations_pb2
from google.protobuf import message_factory

from gateway import edge
from gateway.descriptors import DescriptorSet
from gateway.path_template import MULTI_WILDCARD, SINGLE_WILDCARD, PathTemplate
from gateway.transcoder import RequestTranscoder, ResponseTranscoder, TranscodeError

logger = logging.getLogger(__name__)

_PACKAGE = re.compile(r"^pixelshop\.([a-z][a-z0-9_]*)\.v\d+(?:(?:alpha|beta)\d*)?$")
_ANY_METHOD = "*"  # HttpRule `custom { kind: "*" }`


class RouteError(ValueError):
    """An HttpRule cannot be routed; raised at start-up, naming the method."""


@dataclasses.dataclass(frozen=True, slots=True)
class RpcMethod:
    """A gRPC method as the gateway calls it."""

    full_name: str  # pixelshop.projects.v1.ProjectService.Undo
    grpc_path: str  # /pixelshop.projects.v1.ProjectService/Undo
    upstream: str  # "projects": the <svc> of the package pixelshop.<svc>.v1
    server_streaming: bool
    response_class: Any  # generated from the pool; deserializes what the upstream answers
    # The response holds a token or a signed URL: answered with Cache-Control: no-store.
    carries_credentials: bool = False

    @classmethod
    def from_descriptor(cls, method: Any) -> RpcMethod:
        service = method.containing_service
        return cls(
            full_name=method.full_name,
            grpc_path=f"/{service.full_name}/{method.name}",
            upstream=upstream_of(service.file.package),
            server_streaming=bool(method.server_streaming),
            response_class=message_factory.GetMessageClass(method.output_type),
            carries_credentials=carries_credentials(method.output_type),
        )


def carries_credentials(message: Any) -> bool:
    """Whether a message, or one nested in it, has a credential field (edge.py's rule)."""
    seen: set[str] = set()
    pending = [message]
    while pending:
        current = pending.pop()
        if current.full_name in seen or current.full_name.startswith("google."):
            continue
        seen.add(current.full_name)
        for field in current.fields:
            if edge.is_credential_field(field.name):
                return True
            if field.message_type is not None:
                pending.append(field.message_type)
    return False


def normalize_path(path: str) -> str:
    """The path as Envoy routes it (merge_slashes, normalize_path): `//` becomes `/`, and
    `.` and `..` segments are resolved (RFC 3986 section 5.2.4), `%2E` counting as `.`."""
    if edge.MERGE_SLASHES and "//" in path:
        path = _SLASHES.sub("/", path)
    if edge.NORMALIZE_PATH and ("." in path or "%" in path) and _DOT_SEGMENT.search(path):
        kept: list[str] = []
        segments = path.split("/")[1:]
        for index, segment in enumerate(segments):
            dots = segment.lower().replace("%2e", ".")
            last = index == len(segments) - 1
            if dots == ".":
                if last:
                    kept.append("")
            elif dots == "..":
                if kept:
                    kept.pop()
                if last:
                    kept.append("")
            else:
                kept.append(segment)
        path = "/" + "/".join(kept)
    return path


_SLASHES = re.compile(r"/{2,}")
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2[eE]){1,2}(?:/|$)")


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One HTTP binding of a gRPC method, with its compiled transcoders."""

    http_method: str
    template: PathTemplate
    method: RpcMethod
    request: RequestTranscoder
    response: ResponseTranscoder


@dataclasses.dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    variables: tuple[str, ...]  # decoded values of route.template.variables, in order


def upstream_of(package: str) -> str:
    """`pixelshop.identity.v1` -> `identity`."""
    match = _PACKAGE.match(package)
    if match is None:
        raise RouteError(f"package {package!r} is not pixelshop.<service>.v<N>: no upstream for it")
    return match.group(1)


def http_rule_of(method: Any) -> Any | None:
    """The method's google.api.http option, or None when it has none."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    return options.Extensions[annotations_pb2.http]


def compile_routes(method: Any, rule: Any, pool: Any) -> list[Route]:
    """Routes for a rule and its additional_bindings (which may not nest, as in Envoy)."""
    rpc = RpcMethod.from_descriptor(method)
    if any(extra.additional_bindings for extra in rule.additional_bindings):
        raise RouteError(f"{rpc.full_name}: additional_bindings must not nest")
    routes = []
    for binding in (rule, *rule.additional_bindings):
        http_method, path = _pattern(binding)
        try:
            template = PathTemplate.parse(path)
            routes.append(
                Route(
                    http_method=http_method,
                    template=template,
                    method=rpc,
                    request=RequestTranscoder(method.input_type, template.variables, binding.body),
                    response=ResponseTranscoder(method.output_type, binding.response_body, pool),
                )
            )
        except ValueError as error:
            raise RouteError(f"{rpc.full_name} ({http_method} {path}): {error}") from None
    return routes


def routes_of(descriptors: DescriptorSet) -> list[Route]:
    """Every route of every annotated method in the descriptor set's files."""
    routes: list[Route] = []
    for file_name in descriptors.file_names:
        file = descriptors.pool.FindFileByName(file_name)
        for service in file.services_by_name.values():
            for method in service.methods:
                rule = http_rule_of(method)
                if rule is None:
                    continue  # internal services carry no rule and are never routed
                if method.client_streaming:
                    logger.warning("not routing client-streaming method %s", method.full_name)
                    continue
                routes.extend(compile_routes(method, rule, descriptors.pool))
    return routes


class _Node:
    __slots__ = ("is_multi", "leaves", "literals", "multi", "single")

    def __init__(self, *, is_multi: bool = False) -> None:
        self.literals: dict[str, _Node] = {}
        self.single: _Node | None = None
        self.multi: _Node | None = None
        self.is_multi = is_multi
        self.leaves: dict[tuple[str, str], Route] = {}  # (HTTP method, verb) -> route

    def child(self, segment: str) -> _Node:
        if segment == SINGLE_WILDCARD:
            self.single = self.single or _Node()
            return self.single
        if segment == MULTI_WILDCARD:
            self.multi = self.multi or _Node(is_multi=True)
            return self.multi
        return self.literals.setdefault(segment, _Node())

    def leaf(self, http_method: str, verb: str) -> Route | None:
        return self.leaves.get((http_method, verb)) or self.leaves.get((_ANY_METHOD, verb))


class RouteTable:
    """All routes, in a trie keyed by path segment; built once, read-only afterwards."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._root = _Node()
        self._verbs = frozenset(r.template.verb for r in self.routes if r.template.verb)
        for route in self.routes:
            node = self._root
            for segment in route.template.segments:
                node = node.child(segment)
            key = (route.http_method, route.template.verb)
            existing = node.leaves.get(key)
            if existing is not None:
                raise RouteError(
                    f"{route.http_method} {route.template.source} is bound to both "
                    f"{existing.method.full_name} and {route.method.full_name}"
                )
            node.leaves[key] = route

    @classmethod
    def from_descriptor_set(cls, descriptors: DescriptorSet) -> RouteTable:
        return cls(routes_of(descriptors))

    def methods_bound_under(self, prefix: str) -> frozenset[str]:
        """Full names of the methods with an HTTP binding whose template starts with
        `prefix` (e.g. the auth RPCs under `/v1/auth:`); rate limits apply to these."""
        return frozenset(
            r.method.full_name for r in self.routes if r.template.source.startswith(prefix)
        )

    def match(self, http_method: str, path: str) -> RouteMatch | None:
        """The route for a method and a raw (still percent-encoded) path without query,
        normalized first as Envoy normalizes it.

        Raises TranscodeError when a matched variable does not decode to UTF-8.
        """
        if not path.startswith("/"):
            return None
        path = normalize_path(path)
        verb = ""
        colon = path.rfind(":")
        if colon > path.rfind("/") and path[colon + 1 :] in self._verbs:
            verb = path[colon + 1 :]
            path = path[:colon]
        parts = path[1:].split("/")
        while parts and not parts[-1]:
            parts.pop()
        route = _lookup(self._root, parts, 0, http_method, verb)
        if route is None:
            return None
        try:
            return RouteMatch(route, route.template.bind(parts))
        except UnicodeDecodeError:
            raise TranscodeError("a path variable is not UTF-8 once percent-decoded") from None


def _lookup(
    node: _Node, parts: Sequence[str], index: int, http_method: str, verb: str
) -> Route | None:
    # Recursion depth is bounded by the trie's depth: a `**` node consumes segments in a loop.
    while True:
        if index == len(parts):
            route = node.leaf(http_method, verb)
            if route is None and node.multi is not None:
                route = node.multi.leaf(http_method, verb)  # `**` matching no segment
            return route
        literal = node.literals.get(parts[index])
        if literal is not None:
            route = _lookup(literal, parts, index + 1, http_method, verb)
            if route is not None:
                return route
        if node.is_multi:
            index += 1
            continue
        for wildcard in (node.single, node.multi):
            if wildcard is not None:
                route = _lookup(wildcard, parts, index + 1, http_method, verb)
                if route is not None:
                    return route
        return None


def _pattern(rule: Any) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError("an HttpRule without a pattern")
    if kind == "custom":
        return rule.custom.kind, rule.custom.path
    return kind.upper(), getattr(rule, kind)
