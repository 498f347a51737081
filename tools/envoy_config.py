"""Renders the production Envoy config from the descriptor set the Python gateway also reads.

    python -m tools.envoy_config            # writes deploy/k8s/base/gateway/envoy.yaml
    python -m tools.envoy_config --check    # exits 1 when the committed file is stale
    python -m tools.envoy_config --cors-origin https://app.example.com --output FILE
    # A local Envoy in front of one gRPC server, e.g. the conformance suite's fake upstream
    # (GATEWAY_URL=http://127.0.0.1:8080 pytest tests/gateway, see gateway/README.md):
    python -m tools.envoy_config --local-upstream 127.0.0.1:50099 \
        --proto-descriptor gen/pixelshop.binpb --cors-origin https://app.pixelshop.test \
        --output /tmp/envoy.yaml

The public services (those whose methods carry `google.api.http` rules) are read from the
descriptor set, so a new RPC or service needs no edit here; a new *upstream* (a service
package `pixelshop.<name>.v1` with no entry in UPSTREAMS) is an error, never a silent gap.
tests/deploy/test_envoy_config.py fails when the committed file differs from `render()`.

How a request flows, and why the config is shaped this way:

1. CORS runs first, on the HTTP path (`/v1/...`). It only acts when a route matches, so
   the virtual host has one route per top-level HTTP path segment; those routes lead to an
   endpoint-less cluster because nothing is ever forwarded on an HTTP path.
2. The transcoder turns the JSON request into a gRPC one, rewrites `:path` to
   `/<package>.<Service>/<Method>` and clears the route cache, so Envoy matches routes
   again on the gRPC path. Routing is therefore by gRPC service (an RPC with its own
   timeout or no-store header gets an exact route before its service's), and because the
   match is on the exact public service name, a native gRPC call to an `...InternalService`
   finds no upstream route even though the transcoder lets gRPC requests pass untouched.
   Before those, two kinds of HTTP route do edge work: a request with a Content-Encoding
   gets a direct 415 (the transcoder and buffer filters are disabled on it), and each raw
   google.api.HttpBody binding gets the upload body limit; every other body is buffered
   to at most the JSON limit (the buffer filter runs before the transcoder).
3. The local rate limit runs after the transcoder, on the gRPC route of the methods whose
   HTTP path starts with `/v1/auth:`: keyed by the RPC, whatever path reached it. Its
   rejection is a gRPC RESOURCE_EXHAUSTED that the transcoder (convert_grpc_status) turns
   into HTTP 429 with a google.rpc.Status body, like every other error.
4. The router sends the call to a STRICT_DNS cluster over the service's headless
   Service: every pod is a host, and HTTP/2 streams are balanced per request.

Every limit, timeout, CORS list, forwarded header, rate limit and local reply comes from
gateway/edge.py, the table the Python gateway reads too (tests/deploy checks both).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway import edge
from gateway.descriptors import DescriptorSet
from gateway.edge import EDGE
from gateway.path_template import MULTI_WILDCARD, SINGLE_WILDCARD
from gateway.routes import Route, RouteTable
from gateway.transcoder import BodyMode

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "gen" / "pixelshop.binpb"
OUTPUT = ROOT / "deploy" / "k8s" / "base" / "gateway" / "envoy.yaml"

# Where the gateway Deployment mounts its ConfigMap (envoy.yaml and the descriptor set).
CONFIG_DIR = "/etc/envoy"
MOUNTED_DESCRIPTOR = f"{CONFIG_DIR}/pixelshop.binpb"

NAMESPACE = "pixelshop"
CLUSTER_DOMAIN = "cluster.local"
LISTENER_PORT = 8080
# The admin interface can change state (/quitquitquit, /drain_listeners): loopback only.
ADMIN_PORT = 9901
# Kubelet probes and Prometheus cannot reach loopback; this listener exposes exactly the
# two read-only admin paths they need.
OPS_PORT = 9902
OPS_PATHS = ("/ready", "/stats/prometheus")
# The public listener's HTTP stats are `http.<prefix>.*`; the gateway pod's preStop hook
# (deploy/k8s/base/gateway/drain.sh, ADR 0024) waits on `http.<prefix>.downstream_rq_active`.
PUBLIC_STAT_PREFIX = "ingress_http"

# The auth rate limit (SPEC section 4, gateway): the edge table's only rate limit.
(AUTH_RATE_LIMIT,) = EDGE.rate_limits
AUTH_PATH_PREFIX = AUTH_RATE_LIMIT.http_path_prefix
AUTH_REQUESTS_PER_MINUTE = AUTH_RATE_LIMIT.requests_per_minute
# LRU of per-address buckets; an address evicted and seen again starts with a full bucket.
AUTH_TRACKED_ADDRESSES = 100_000
# Sized for the gateway container's memory limit (1 GiB in deploy/k8s): shed load before
# the kernel kills the pod. tests/deploy checks that the limit stays above it.
MAX_HEAP_BYTES = EDGE.overload.envoy_max_heap_bytes
MAX_DOWNSTREAM_CONNECTIONS = EDGE.overload.envoy_max_downstream_connections

SERVICE_TOKEN_HEADER = edge.SERVICE_TOKEN_HEADER
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
BUFFER = "envoy.filters.http.buffer"

# Requests on an HTTP path are never forwarded (see the module doc): this cluster has no
# endpoints, so anything that reaches the router untranscoded gets a 503, not a service.
UNTRANSCODED_CLUSTER = "untranscoded_http"
ADMIN_CLUSTER = "envoy_admin"

_PACKAGE = re.compile(r"^pixelshop\.([a-z][a-z0-9_]*)\.v[0-9]+$")
# As gateway/settings.py accepts them: "*" or scheme://host[:port], no path.
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/\s]+$")
_TYPE_PREFIX = "type.googleapis.com/"


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One gRPC service Deployment as the gateway reaches it."""

    name: str
    port: int
    # Where to reach it instead of its headless Service (a local run): an IP or host name.
    host: str | None = None

    @property
    def timeout_seconds(self) -> float:
        """Route timeout of its prefix route (edge table; AI edits take minutes)."""
        return EDGE.timeout(self.name)

    def timeout_for(self, method: str | None) -> float:
        """Route timeout of a call to `method` (an RPC full name): its own entry in
        EDGE.method_timeout_seconds (an exact route), else the prefix route's."""
        return EDGE.timeout(self.name, method)

    def address(self, name: str) -> str:
        return self.host or f"{name}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"


UPSTREAMS: Mapping[str, Upstream] = MappingProxyType(
    {
        name: Upstream(name, port)
        for name, port in (
            ("identity", 50051),
            ("projects", 50052),
            ("assets", 50053),
            ("presets", 50054),
            ("billing", 50055),
        )
    }
)


class EnvoyConfigError(ValueError):
    """The descriptor set and the upstream table do not fit together."""


@dataclasses.dataclass(frozen=True)
class PublicService:
    """A gRPC service with HTTP rules, as the transcoder and the routes see it."""

    upstream: str  # "identity"
    full_name: str  # "pixelshop.identity.v1.IdentityService"
    # (method name, HTTP path template) for every binding, additional ones included.
    bindings: tuple[tuple[str, str], ...]

    @property
    def grpc_prefix(self) -> str:
        return f"/{self.full_name}/"


def _rule_paths(rule: Any) -> Iterable[str]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        yield rule.custom.path
    elif pattern:
        yield getattr(rule, pattern)
    for extra in rule.additional_bindings:
        yield from _rule_paths(extra)


def public_services(descriptor_path: pathlib.Path) -> list[PublicService]:
    """Every service of a `pixelshop.<name>.vN` package that has HTTP rules, sorted by name."""
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    descriptor_set.ParseFromString(descriptor_path.read_bytes())
    found: list[PublicService] = []
    for file in descriptor_set.file:
        match = _PACKAGE.match(file.package)
        if match is None:
            continue
        for service in file.service:
            bindings = tuple(
                (method.name, path)
                for method in service.method
                if method.options.HasExtension(annotations_pb2.http)
                for path in _rule_paths(method.options.Extensions[annotations_pb2.http])
            )
            if not bindings:
                continue  # internal: reachable only from inside the cluster
            full_name = f"{file.package}.{service.name}"
            if service.name.endswith("InternalService"):
                raise EnvoyConfigError(f"{full_name} is internal but has HTTP rules")
            found.append(PublicService(match.group(1), full_name, bindings))
    return sorted(found, key=lambda s: s.full_name)


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": _TYPE_PREFIX + type_name, **fields}


def _always() -> dict[str, Any]:
    return {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def _http_path_prefixes(services: Sequence[PublicService]) -> list[str]:
    """`/v1/` and `/.well-known/`: the first segment of every HTTP path, for CORS."""
    prefixes = set()
    for service in services:
        for _, path in service.bindings:
            first, slash, _ = path.lstrip("/").partition("/")
            prefixes.add(f"/{first}{slash}" if slash else path)
    return sorted(prefixes)


def _auth_methods(services: Sequence[PublicService]) -> list[str]:
    """gRPC paths of the methods whose HTTP path is an auth endpoint (rate limited)."""
    return sorted(
        {
            f"{service.grpc_prefix}{method}"
            for service in services
            for method, path in service.bindings
            if path.startswith(AUTH_PATH_PREFIX)
        }
    )


def _auth_rate_limit() -> dict[str, Any]:
    # One bucket per client address (the `remote_address` descriptor with no value is a
    # wildcard: Envoy keeps a bucket per distinct value, in an LRU). The buckets live in one
    # Envoy process: with N gateway replicas a client spread over several of them gets up to
    # N times the limit (deploy/README.md, "Rate limit"). One token comes back every
    # 60/limit seconds, as in the Python gateway's continuously refilled bucket.
    per_minute = {
        "max_tokens": AUTH_REQUESTS_PER_MINUTE,
        "tokens_per_fill": 1,
        "fill_interval": _duration(AUTH_RATE_LIMIT.refill_interval_seconds()),
    }
    return _typed(
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        stat_prefix="auth_rate_limit",
        # Required on a route; with always_consume_default_token_bucket off it only counts
        # requests that produce no descriptor, which cannot happen (every peer has an address).
        token_bucket=per_minute,
        filter_enabled={**_always(), "runtime_key": "auth_rate_limit_enabled"},
        filter_enforced={**_always(), "runtime_key": "auth_rate_limit_enforced"},
        rate_limits=[{"actions": [{"remote_address": {}}]}],
        descriptors=[{"entries": [{"key": "remote_address"}], "token_bucket": per_minute}],
        max_dynamic_descriptors=AUTH_TRACKED_ADDRESSES,
        always_consume_default_token_bucket=False,
        rate_limited_as_resource_exhausted=True,
        # The Python gateway says how long to wait and sends no X-RateLimit-* headers.
        response_headers_to_add=[
            {
                "header": {
                    "key": "retry-after",
                    "value": str(AUTH_RATE_LIMIT.retry_after_seconds()),
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    )


def _cors_policy(origins: Sequence[str]) -> dict[str, Any]:
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise EnvoyConfigError(f"CORS origin {origin!r} is not '*' or scheme://host[:port]")
    return _typed(
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[
            {"safe_regex": {"regex": ".*"}} if origin == "*" else {"exact": origin}
            for origin in origins
        ],
        allow_methods=", ".join(EDGE.cors.allow_methods),
        allow_headers=", ".join(EDGE.cors.allow_headers),
        expose_headers=", ".join(EDGE.cors.expose_headers),
        max_age=str(EDGE.cors.max_age_seconds),
    )


def _no_store() -> list[dict[str, Any]]:
    return [
        {
            "header": {"key": "cache-control", "value": edge.NO_STORE},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def _grpc_path(full_name: str) -> str:
    service, _, method = full_name.rpartition(".")
    return f"/{service}/{method}"


def _template_regex(route: Route) -> str:
    """A regex matching the (normalized) HTTP paths a binding's template matches."""
    parts = []
    for segment in route.template.segments:
        if segment == SINGLE_WILDCARD:
            parts.append("[^/]+")
        elif segment == MULTI_WILDCARD:
            parts.append(".*")
        else:
            parts.append(re.escape(segment))
    verb = f":{re.escape(route.template.verb)}" if route.template.verb else ""
    return "^/" + "/".join(parts) + verb + "/?(?:\\?.*)?$"


def _disabled(*filters: str) -> dict[str, Any]:
    return {name: _typed("envoy.config.route.v3.FilterConfig", disabled=True) for name in filters}


def _http_routes(table: RouteTable) -> list[Any]:
    """Routes on the browser's HTTP path (before transcoding): edge checks and CORS."""
    encoding = "content-encoding"
    routes: list[Any] = [
        {
            # Compressed request bodies are refused before anything reads them (415).
            "name": "compressed-request-body",
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": encoding, "present_match": True},
                    {
                        "name": encoding,
                        "string_match": {"exact": "identity", "ignore_case": True},
                        "invert_match": True,
                    },
                ],
            },
            "direct_response": {
                "status": 415,
                "body": {"inline_string": "compressed request bodies are not accepted"},
            },
            "typed_per_filter_config": _disabled(TRANSCODER, BUFFER),
        }
    ]
    # Raw google.api.HttpBody bindings (uploads, the Stripe webhook) may be as large as an
    # upload; every other body is buffered to at most the JSON limit.
    for route in table.routes:
        if route.request.body_mode is not BodyMode.RAW:
            continue
        http_method = {"name": ":method", "string_match": {"exact": route.http_method}}
        routes.append(
            {
                "name": f"upload {route.http_method} {route.template.source}",
                "match": {
                    "safe_regex": {"regex": _template_regex(route)},
                    "headers": [http_method],
                },
                "route": {"cluster": UNTRANSCODED_CLUSTER},
                "typed_per_filter_config": {
                    BUFFER: _typed(
                        "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                        buffer={"max_request_bytes": EDGE.bodies.upload_bytes},
                    )
                },
            }
        )
    return routes


def _routes(
    services: Sequence[PublicService], upstreams: Mapping[str, Upstream], table: RouteTable
) -> list[Any]:
    # Connection failures and refused streams never reached a service: safe to retry for
    # any method. Nothing else is retried (ApplyEdit and uploads are not idempotent here).
    retry = {"retry_on": "connect-failure,refused-stream", "num_retries": 2}
    # Transcoded calls are gRPC by now; a plain HTTP request on a gRPC path is not routed.
    grpc_only: dict[str, Any] = {"grpc": {}}
    routes: list[Any] = _http_routes(table)
    no_store = {r.method.full_name for r in table.routes if r.method.carries_credentials}
    timed = dict(EDGE.method_timeout_seconds)
    unrouted = sorted(set(timed) - {r.method.full_name for r in table.routes})
    if unrouted:
        raise EnvoyConfigError(
            f"edge.py gives {', '.join(unrouted)} a timeout, but no HTTP rule routes it: "
            "fix the name in EdgePolicy.method_timeout_seconds"
        )

    def forward(upstream: str, method: str | None = None) -> dict[str, Any]:
        timeout = _duration(upstreams[upstream].timeout_for(method))
        # idle_timeout overrides stream_idle_timeout (the body idle timeout) once routed:
        # waiting for a slow upstream is bounded by the route timeout alone.
        return {
            "cluster": upstream,
            "timeout": timeout,
            "idle_timeout": timeout,
            "retry_policy": retry,
        }

    auth = _auth_methods(services)
    if auth:
        owners = {path.split("/")[1] for path in auth}
        if len(owners) != 1:
            raise EnvoyConfigError(f"auth endpoints span several services: {sorted(owners)}")
        upstream = next(s.upstream for s in services if s.full_name in owners)
        shared = sorted(name for name in timed if _grpc_path(name) in auth)
        if shared:
            # The auth methods share one route (one bucket), hence one timeout.
            raise EnvoyConfigError(f"auth RPCs cannot have their own timeout: {shared}")
        # One route for all auth methods, so that one bucket per address covers them all
        # (a per-route rate limit config keeps its buckets per route).
        regex = "|".join(re.escape(path) for path in auth)
        auth_route: dict[str, Any] = {
            "name": "auth",
            "match": {"safe_regex": {"regex": f"^(?:{regex})$"}, **grpc_only},
            "route": forward(upstream),
            "typed_per_filter_config": {"envoy.filters.http.local_ratelimit": _auth_rate_limit()},
        }
        if any(_grpc_path(name) in auth for name in no_store):
            # Response headers are per route: every auth answer is no-store then (the
            # Python gateway does the same).
            auth_route["response_headers_to_add"] = _no_store()
        routes.append(auth_route)
        no_store -= {name for name in no_store if _grpc_path(name) in auth}
    # An exact route per RPC that needs its own response headers or timeout, before its
    # service's prefix route. Transcoded calls match it too: the transcoder rewrites
    # `:path` to the gRPC path and clears the route cache, and the router takes the
    # timeout (and the HCM the idle timeout) from the route matched then, never from the
    # HTTP-path routes above, which forward nothing.
    by_service = {s.full_name: s for s in services}
    for name in sorted(no_store | set(timed)):
        service = by_service[name.rpartition(".")[0]]
        own: dict[str, Any] = {
            "name": f"{'no-store' if name in no_store else 'timeout'} {name}",
            "match": {"path": _grpc_path(name), **grpc_only},
            "route": forward(service.upstream, name),
        }
        if name in no_store:
            own["response_headers_to_add"] = _no_store()
        routes.append(own)
    for service in services:
        routes.append(
            {
                "name": service.full_name,
                "match": {"prefix": service.grpc_prefix, **grpc_only},
                "route": forward(service.upstream),
            }
        )
    for prefix in _http_path_prefixes(services):
        routes.append(
            {
                "name": f"http{prefix}",
                "match": {"prefix": prefix},
                "route": {"cluster": UNTRANSCODED_CLUSTER},
            }
        )
    return routes


def _local_reply_mappers() -> list[Any]:
    """Envoy's own answers (router 404, buffer 413, timeouts 408, overload 503, the 415
    route...) as google.rpc.Status JSON with the edge table's code and reason."""
    mappers = []
    for status, reply in sorted(edge.LOCAL_REPLIES.items()):
        mapper: dict[str, Any] = {
            "filter": {
                "and_filter": {
                    "filters": [
                        {
                            "status_code_filter": {
                                "comparison": {"op": "EQ", "value": _runtime(status)}
                            }
                        },
                        # gRPC local replies carry their status in trailers, which the
                        # transcoder converts itself; rewriting their body would garble it.
                        {
                            "header_filter": {
                                "header": {
                                    "name": "content-type",
                                    "string_match": {"prefix": "application/grpc"},
                                    "invert_match": True,
                                }
                            }
                        },
                    ]
                }
            },
            "body_format_override": {
                "json_format": {
                    "code": reply.grpc_code,
                    "message": "%LOCAL_REPLY_BODY%",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": reply.reason,
                            "domain": edge.ERROR_DOMAIN,
                        }
                    ],
                },
                "content_type": "application/json",
            },
        }
        if status == 503:
            mapper["headers_to_add"] = [
                {
                    "header": {
                        "key": "retry-after",
                        "value": str(EDGE.overload.retry_after_seconds),
                    },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ]
        mappers.append(mapper)
    return mappers


def _http_connection_manager(
    services: Sequence[PublicService],
    upstreams: Mapping[str, Upstream],
    origins: Sequence[str],
    table: RouteTable,
    proto_descriptor: str,
) -> dict[str, Any]:
    virtual_host: dict[str, Any] = {
        "name": "pixelshop",
        "domains": ["*"],
        "routes": _routes(services, upstreams, table),
    }
    if origins:
        virtual_host["typed_per_filter_config"] = {"envoy.filters.http.cors": _cors_policy(origins)}
    access_log_fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        # The transcoder keeps the browser's method and path in x-envoy-original-*; plain
        # gRPC requests have none, so their own :method and :path are logged.
        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "grpc_method": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS(NUMBER)%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "duration_ms": "%DURATION%",
        "user_agent": "%REQ(USER-AGENT)%",
    }
    timeouts = EDGE.timeouts
    return _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=PUBLIC_STAT_PREFIX,
        codec_type="AUTO",
        # The edge: the client address is the TCP peer (the LoadBalancer Service keeps it
        # with externalTrafficPolicy: Local). Raise xff_num_trusted_hops behind an L7 proxy.
        use_remote_address=True,
        xff_num_trusted_hops=0,
        # The Python gateway keeps a client's X-Request-Id too; services log it.
        preserve_external_request_id=True,
        normalize_path=edge.NORMALIZE_PATH,
        merge_slashes=edge.MERGE_SLASHES,
        max_request_headers_kb=EDGE.headers.max_bytes // 1024,
        common_http_protocol_options={
            "idle_timeout": _duration(timeouts.connection_idle),
            "max_headers_count": EDGE.headers.max_count,
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        # Slow clients (edge table): headers in time, no long silence mid-body, the whole
        # request within request_timeout. Routes lift the idle timeout once upstream.
        request_headers_timeout=_duration(timeouts.request_headers),
        request_timeout=_duration(timeouts.request),
        stream_idle_timeout=_duration(timeouts.body_idle),
        access_log=[
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": _typed(
                    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    log_format={"json_format": access_log_fields},
                ),
            }
        ],
        route_config={
            "name": "pixelshop",
            # Envoy forwards every other header; the services read edge.FORWARDED_HEADERS.
            "request_headers_to_remove": list(edge.REMOVED_REQUEST_HEADERS),
            # gRPC replaces `user-agent`; services read the browser's one here (gateway/headers.py)
            "request_headers_to_add": [
                {
                    "header": {"key": edge.FORWARDED_USER_AGENT, "value": "%REQ(USER-AGENT)%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "virtual_hosts": [virtual_host],
        },
        # The order is the contract (SPEC section 5): CORS sees the browser's request, the
        # buffer filter bounds its body, the transcoder makes it gRPC, the rate limit and
        # the router see gRPC.
        http_filters=[
            {
                "name": "envoy.filters.http.cors",
                "typed_config": _typed("envoy.extensions.filters.http.cors.v3.Cors"),
            },
            {
                "name": BUFFER,
                "typed_config": _typed(
                    "envoy.extensions.filters.http.buffer.v3.Buffer",
                    max_request_bytes=EDGE.bodies.json_bytes,
                ),
            },
            {"name": TRANSCODER, "typed_config": _transcoder(services, proto_descriptor)},
            {
                "name": "envoy.filters.http.local_ratelimit",
                # Disabled here; the auth route enables it with its own config.
                "typed_config": _typed(
                    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    stat_prefix="http_local_rate_limit",
                ),
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
            },
        ],
        local_reply_config={"mappers": _local_reply_mappers()},
    )


def _runtime(value: int) -> dict[str, Any]:
    return {"default_value": value, "runtime_key": f"local_reply_status_{value}"}


def _transcoder(services: Sequence[PublicService], proto_descriptor: str) -> dict[str, Any]:
    return _typed(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=proto_descriptor,
        services=[service.full_name for service in services],
        # proto3 JSON exactly as the Python gateway prints it: lowerCamelCase names,
        # defaults omitted, enums as names (SPEC section 5).
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": False,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
        },
        convert_grpc_status=True,
        # Only HTTP rules are routes: no `/<package>.<Service>/<Method>` JSON calls.
        auto_mapping=False,
        request_validation_options={
            # An HTTP path no rule knows is a 404 here rather than a request forwarded
            # untranscoded to a gRPC server (which would reset it: a confusing 503).
            "reject_unknown_method": True,
            # Browsers and proxies add parameters we never declared (cache busters, utm_*):
            # a 400 for those would break clients. Without ignore_unknown_query_parameters
            # such a request would pass through untranscoded instead, so unknown
            # parameters are ignored, as the Python gateway ignores them.
            "reject_unknown_query_parameters": False,
        },
        ignore_unknown_query_parameters=True,
        # The buffer filter before it holds JSON bodies to the JSON limit already.
        max_request_body_size=EDGE.bodies.upload_bytes,
        # Downloads are HttpBody messages of at most one stored object.
        max_response_body_size=EDGE.bodies.response_bytes,
    )


def _service_cluster(name: str, upstream: Upstream) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": upstream.address(name),
                                        "port_value": upstream.port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={
                    "http2_protocol_options": {
                        # Finds a pod that vanished without closing its connections.
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    }
                },
            )
        },
        # The services answer grpc.health.v1 for "" (runtime/server.py), NOT_SERVING
        # as soon as they begin a graceful shutdown. No outlier detection: it ejects hosts
        # on 5xx, and for gRPC an INTERNAL caused by one bad request would count against a
        # healthy pod; health checks plus connect-failure retries cover dead pods.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        # Bounds what one slow service can hold in the gateway; beyond them calls fail
        # fast with UNAVAILABLE instead of queueing.
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 1024,
                    "max_pending_requests": 1024,
                    "max_requests": 4096,
                    "max_retries": 16,
                }
            ]
        },
    }


def _static_cluster(name: str, address: str | None, port: int = 0) -> dict[str, Any]:
    endpoints = []
    if address is not None:
        socket = {"socket_address": {"address": address, "port_value": port}}
        endpoints.append({"lb_endpoints": [{"endpoint": {"address": socket}}]})
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    }


def _ops_listener() -> dict[str, Any]:
    routes: list[Any] = [
        {"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}} for path in OPS_PATHS
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    manager = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="ops",
        route_config={
            "name": "ops",
            "virtual_hosts": [{"name": "ops", "domains": ["*"], "routes": routes}],
        },
        http_filters=[
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
            }
        ],
    )
    return _listener("ops", OPS_PORT, manager)


def _listener(
    name: str, port: int, manager: dict[str, Any], *, inbound: bool = False
) -> dict[str, Any]:
    # The drain on shutdown (`POST /drain_listeners?graceful&inboundonly`, ADR 0024) acts
    # only on INBOUND listeners: the public one. The ops listener keeps answering the
    # kubelet's probes and Prometheus until Envoy exits.
    direction = {"traffic_direction": "INBOUND"} if inbound else {}
    return {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        **direction,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def _overload_manager() -> dict[str, Any]:
    heap = "envoy.resource_monitors.fixed_heap"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": heap,
                "typed_config": _typed(
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    max_heap_size_bytes=MAX_HEAP_BYTES,
                ),
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": _typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3."
                    "DownstreamConnectionsConfig",
                    max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS,
                ),
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": heap, "threshold": {"value": 0.9}}],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": heap, "threshold": {"value": 0.95}}],
            },
        ],
    }


def render(
    descriptor_path: pathlib.Path,
    services: Mapping[str, Upstream] = UPSTREAMS,
    *,
    cors_origins: Sequence[str] = (),
    proto_descriptor: str = MOUNTED_DESCRIPTOR,
) -> dict[str, Any]:
    """The Envoy bootstrap (a plain dict, as YAML would load it) for `services`."""
    public = public_services(descriptor_path)
    unknown = sorted({s.upstream for s in public} - set(services))
    if unknown:
        raise EnvoyConfigError(
            f"no upstream for {', '.join(unknown)}: add it to UPSTREAMS in tools/envoy_config.py"
        )
    if not public:
        raise EnvoyConfigError(f"{descriptor_path} has no service with HTTP rules")
    used = sorted({s.upstream for s in public})
    # The routes exactly as the Python gateway compiles them (body kinds, credentials).
    table = RouteTable.from_descriptor_set(DescriptorSet.load(descriptor_path))
    return {
        "node": {"id": "pixelshop-gateway", "cluster": "pixelshop-gateway"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}
        },
        "static_resources": {
            "listeners": [
                _listener(
                    "http",
                    LISTENER_PORT,
                    _http_connection_manager(
                        public, services, cors_origins, table, proto_descriptor
                    ),
                    inbound=True,
                ),
                _ops_listener(),
            ],
            "clusters": [
                *(_service_cluster(name, services[name]) for name in used),
                _static_cluster(UNTRANSCODED_CLUSTER, None),
                _static_cluster(ADMIN_CLUSTER, "127.0.0.1", ADMIN_PORT),
            ],
        },
        "overload_manager": _overload_manager(),
    }


HEADER = """\
# Generated by tools/envoy_config.py from gen/pixelshop.binpb; do not edit by hand.
# Regenerate: .venv/bin/python -m tools.envoy_config (tests/deploy fails when it is stale).
"""


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-dicts out in full: anchors and aliases make a config hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(config: Mapping[str, Any]) -> str:
    """The YAML text written to envoy.yaml (stable: keys keep the order render() gives)."""
    body = yaml.dump(
        dict(config), Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=100
    )
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--descriptor-set", type=pathlib.Path, default=DESCRIPTOR_SET)
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="a browser origin allowed by CORS (scheme://host[:port]); repeat for more",
    )
    parser.add_argument(
        "--local-upstream",
        metavar="HOST:PORT",
        help="send every service's calls to this one gRPC server (a local conformance run)",
    )
    parser.add_argument(
        "--proto-descriptor",
        default=MOUNTED_DESCRIPTOR,
        help=f"where Envoy reads the descriptor set (default {MOUNTED_DESCRIPTOR})",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when OUTPUT differs instead of writing it"
    )
    options = parser.parse_args(argv)
    services = UPSTREAMS
    if options.local_upstream:
        host, _, port = options.local_upstream.rpartition(":")
        if not host or not port.isdigit():
            print("envoy_config: --local-upstream must be HOST:PORT", file=sys.stderr)
            return 2
        services = {name: Upstream(name, int(port), host=host) for name in UPSTREAMS}
    try:
        text = dump(
            render(
                options.descriptor_set,
                services,
                cors_origins=options.cors_origin,
                proto_descriptor=str(options.proto_descriptor),
            )
        )
    except (EnvoyConfigError, OSError) as error:
        print(f"envoy_config: {error}", file=sys.stderr)
        return 2
    if options.check:
        current = options.output.read_text() if options.output.exists() else ""
        if current != text:
            print(f"envoy_config: {options.output} is stale; run without --check", file=sys.stderr)
            return 1
        return 0
    options.output.write_text(text)
    print(f"envoy_config: wrote {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
