"""The production Envoy config: generated, current, and shaped as SPEC section 5 requires."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import pathlib
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway import edge, upstreams
from gateway.cors import CorsPolicy
from gateway.descriptors import DescriptorSet
from gateway.edge import EDGE
from gateway.errors import StatusEncoder
from gateway.headers import request_metadata
from gateway.routes import RouteTable
from gateway.server import Gateway
from gateway.settings import GatewaySettings
from gateway.transcoder import BodyMode
from services.projects.settings import ProjectsSettings
from tools import envoy_config

TYPE_PREFIX = "type.googleapis.com/"
# What runtime/errors.py puts in google.rpc.Status details.
ERROR_DETAIL_TYPES = ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(envoy_config.OUTPUT.read_text())
    return loaded


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    parsed = descriptor_pb2.FileDescriptorSet()
    parsed.ParseFromString(envoy_config.DESCRIPTOR_SET.read_bytes())
    return parsed


def services_by_kind(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> tuple[set[str], set[str]]:
    """(public, internal) Pixelshop services: public ones carry HTTP rules (ARCHITECTURE.md)."""
    public, internal = set(), set()
    for file in descriptor_set.file:
        if not file.package.startswith("pixelshop."):
            continue
        for service in file.service:
            name = f"{file.package}.{service.name}"
            routed = any(m.options.HasExtension(annotations_pb2.http) for m in service.method)
            (public if routed else internal).add(name)
    return public, internal


def http_manager(config: dict[str, Any], listener: str = "http") -> dict[str, Any]:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == listener]
    (chain,) = found["filter_chains"]
    (manager,) = chain["filters"]
    typed: dict[str, Any] = manager["typed_config"]
    return typed


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f for f in http_manager(config)["http_filters"] if f["name"] == name]
    typed: dict[str, Any] = found["typed_config"]
    return typed


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = http_manager(config)["route_config"]["virtual_hosts"]
    found: list[dict[str, Any]] = host["routes"]
    return found


def route_for(
    config: dict[str, Any],
    path: str,
    grpc: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The first route matching `path`, as Envoy picks it (the gRPC matcher needs gRPC;
    header matchers: present, exact, inverted)."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    for route in routes(config):
        match = route["match"]
        if "grpc" in match and not grpc:
            continue
        if not all(_header_matches(m, headers) for m in match.get("headers", ())):
            continue
        if "prefix" in match and path.startswith(match["prefix"]):
            return route
        if "path" in match and path == match["path"]:
            return route
        if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path):
            return route
    return None


def _header_matches(matcher: dict[str, Any], headers: dict[str, str]) -> bool:
    value = headers.get(matcher["name"])
    if matcher.get("present_match"):
        return value is not None
    expected = matcher["string_match"]["exact"]
    if matcher["string_match"].get("ignore_case") and value is not None:
        found = value.lower() == expected.lower()
    else:
        found = value == expected
    return found != bool(matcher.get("invert_match"))


def type_urls(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def test_committed_config_is_what_the_generator_renders() -> None:
    rendered = envoy_config.dump(envoy_config.render(envoy_config.DESCRIPTOR_SET))
    assert envoy_config.OUTPUT.read_text() == rendered, (
        "deploy/k8s/base/gateway/envoy.yaml is stale: run .venv/bin/python -m tools.envoy_config"
    )
    assert envoy_config.main(["--check"]) == 0


def test_transcoder_serves_every_public_service_and_no_internal_one(
    config: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    public, internal = services_by_kind(descriptor_set)
    listed = http_filter(config, "envoy.filters.http.grpc_json_transcoder")["services"]
    assert set(listed) == public
    assert len(listed) == len(public)
    assert not set(listed) & internal
    assert all(not name.endswith("InternalService") for name in listed)
    assert internal, "the descriptor set should hold the internal services too"


def test_filters_run_cors_then_transcoder_then_router(config: dict[str, Any]) -> None:
    names = [f["name"] for f in http_manager(config)["http_filters"]]
    cors = names.index("envoy.filters.http.cors")
    transcoder = names.index("envoy.filters.http.grpc_json_transcoder")
    assert cors < transcoder < names.index("envoy.filters.http.router")
    assert names[-1] == "envoy.filters.http.router"
    # The rate limit sees the gRPC route, which only exists after transcoding.
    assert transcoder < names.index("envoy.filters.http.local_ratelimit")


def test_transcoder_behaves_like_the_python_gateway(config: dict[str, Any]) -> None:
    transcoder = http_filter(config, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == "/etc/envoy/pixelshop.binpb"
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["auto_mapping"] is False
    assert transcoder["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": False,
        "always_print_enums_as_ints": False,
        "preserve_proto_field_names": False,
    }
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": False,
    }
    assert transcoder["ignore_unknown_query_parameters"] is True
    assert transcoder["max_request_body_size"] == 64 * 1024 * 1024


def test_descriptor_set_holds_the_error_detail_types(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    messages = {f"{f.package}.{m.name}" for f in descriptor_set.file for m in f.message_type}
    assert set(ERROR_DETAIL_TYPES) <= messages


def test_routes_match_grpc_paths_of_public_services_only(
    config: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    public, internal = services_by_kind(descriptor_set)
    for name in public:
        route = route_for(config, f"/{name}/AnyMethod")
        assert route is not None, name
        upstream = name.split(".")[1]
        assert route["route"]["cluster"] == upstream
        expected = envoy_config.UPSTREAMS[upstream].timeout_seconds
        assert route["route"]["timeout"] == f"{expected:g}s"
    for name in internal:
        route = route_for(config, f"/{name}/PurgeUser")
        assert route is None or route["route"]["cluster"] == envoy_config.UNTRANSCODED_CLUSTER, (
            f"{name} is reachable through the gateway"
        )
    # AI edits take minutes; everything else answers within 30 s.
    assert route_for(config, "/pixelshop.projects.v1.ProjectService/ApplyEdit") is not None
    assert envoy_config.UPSTREAMS["projects"].timeout_seconds == 180
    assert {u.timeout_seconds for n, u in envoy_config.UPSTREAMS.items() if n != "projects"} == {30}


def test_http_paths_have_a_route_for_cors_but_no_upstream(config: dict[str, Any]) -> None:
    """CORS runs before transcoding and acts only when the browser's path matches a route."""
    for path in ("/v1/auth:logIn", "/v1/projects/1:undo", "/.well-known/jwks.json"):
        route = route_for(config, path, grpc=False, headers={":method": "POST"})
        assert route is not None, path
        assert route["route"]["cluster"] == envoy_config.UNTRANSCODED_CLUSTER
    (cluster,) = [
        c
        for c in config["static_resources"]["clusters"]
        if c["name"] == envoy_config.UNTRANSCODED_CLUSTER
    ]
    assert cluster["load_assignment"]["endpoints"] == []


def test_auth_endpoints_are_rate_limited_per_client_address(
    config: dict[str, Any], descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    auth_methods = set()
    for file in descriptor_set.file:
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                if rule.post.startswith("/v1/auth:"):
                    auth_methods.add(f"/{file.package}.{service.name}/{method.name}")
    assert len(auth_methods) >= 4
    limited = [
        r
        for r in routes(config)
        if "envoy.filters.http.local_ratelimit" in r.get("typed_per_filter_config", {})
    ]
    assert len(limited) == 1, "one route, so that one bucket per address covers every method"
    (route,) = limited
    for path in auth_methods:
        assert route_for(config, path) is route, path
    assert route_for(config, "/pixelshop.identity.v1.IdentityService/GetCurrentUser") is not route
    limit = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    assert limit["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    # A descriptor entry without a value: one token bucket per distinct client address.
    (descriptor,) = limit["descriptors"]
    assert descriptor["entries"] == [{"key": "remote_address"}]
    bucket = descriptor["token_bucket"]
    assert bucket["max_tokens"] == 600
    # A token every 0.1 s: the Python gateway's bucket refills at the same rate.
    assert bucket["tokens_per_fill"] == 1
    assert bucket["fill_interval"] == "0.1s"
    assert limit["always_consume_default_token_bucket"] is False
    assert limit["rate_limited_as_resource_exhausted"] is True


def test_clusters_reach_headless_services_over_http2(config: dict[str, Any]) -> None:
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, upstream in envoy_config.UPSTREAMS.items():
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        assert cluster["lb_policy"] == "ROUND_ROBIN"
        (locality,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = locality["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address == {
            "address": f"{name}.pixelshop.svc.cluster.local",
            "port_value": upstream.port,
        }
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert "http2_protocol_options" in options["explicit_http_config"]
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"] == {}
        assert cluster["circuit_breakers"]["thresholds"]


def test_admin_stays_on_loopback_and_logs_go_to_stdout_as_json(config: dict[str, Any]) -> None:
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (log,) = http_manager(config)["access_log"]
    assert log["typed_config"]["@type"].endswith("StdoutAccessLog")
    assert "json_format" in log["typed_config"]["log_format"]
    # The ops listener exposes readiness and metrics, nothing else of the admin interface.
    (host,) = http_manager(config, "ops")["route_config"]["virtual_hosts"]
    forwarded = {r["match"].get("path") for r in host["routes"] if "route" in r}
    assert forwarded == {"/ready", "/stats/prometheus"}


def test_render_rejects_a_service_without_upstream() -> None:
    with pytest.raises(envoy_config.EnvoyConfigError, match="no upstream for"):
        envoy_config.render(
            envoy_config.DESCRIPTOR_SET, {"identity": envoy_config.UPSTREAMS["identity"]}
        )


def test_cors_origins_become_a_virtual_host_policy() -> None:
    origin = "https://app.pixelshop.example"
    rendered = envoy_config.render(envoy_config.DESCRIPTOR_SET, cors_origins=[origin])
    (host,) = http_manager(rendered)["route_config"]["virtual_hosts"]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": origin}]
    # None by default, as in the Python gateway.
    (default_host,) = http_manager(envoy_config.render(envoy_config.DESCRIPTOR_SET))[
        "route_config"
    ]["virtual_hosts"]
    assert "typed_per_filter_config" not in default_host


@pytest.mark.skipif(
    importlib.util.find_spec("envoy_data_plane") is None,
    reason="envoy-data-plane is not installed (a dev dependency: pip install envoy-data-plane)",
)
def test_config_parses_into_envoys_typed_api(config: dict[str, Any]) -> None:
    """Catches misspelled fields, wrong types and deprecated fields (not Envoy's own checks)."""
    with warnings.catch_warnings():
        # The generated package trips pydantic deprecation warnings at import time.
        warnings.simplefilter("ignore")
        bootstrap_module = importlib.import_module("envoy_data_plane.envoy.config.bootstrap.v3")
        # An Any only parses once the module of its type is imported.
        for url in set(type_urls(config)):
            package = url.removeprefix(TYPE_PREFIX).rsplit(".", 1)[0]
            importlib.import_module(f"envoy_data_plane.{package}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bootstrap = bootstrap_module.Bootstrap.from_dict(config)
    deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not deprecated, deprecated
    assert len(bootstrap.static_resources.clusters) == len(config["static_resources"]["clusters"])


def test_cors_origins_are_checked() -> None:
    with pytest.raises(envoy_config.EnvoyConfigError, match="CORS origin"):
        envoy_config.render(envoy_config.DESCRIPTOR_SET, cors_origins=["app.example.com/x"])


# --- one edge table for both gateways (gateway/edge.py) ----------------------------------------


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.from_descriptor_set(DescriptorSet.load(envoy_config.DESCRIPTOR_SET))


def test_python_gateway_defaults_are_the_edge_table() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.json_body_max_bytes == EDGE.bodies.json_bytes == 1024 * 1024
    assert settings.upload_body_max_bytes == EDGE.bodies.upload_bytes == 64 * 1024 * 1024
    assert settings.inflight_max_bytes == EDGE.overload.inflight_request_bytes
    assert settings.request_decompression == ""
    assert settings.auth_rate_limit_per_minute == EDGE.rate_limits[0].requests_per_minute
    assert settings.request_headers_timeout_seconds == EDGE.timeouts.request_headers
    assert settings.body_idle_timeout_seconds == EDGE.timeouts.body_idle
    assert settings.request_timeout_seconds == EDGE.timeouts.request
    assert settings.idle_timeout_seconds == EDGE.timeouts.connection_idle
    for name, upstream in envoy_config.UPSTREAMS.items():
        assert settings.upstream_timeout(name) == upstream.timeout_seconds
    assert EDGE.bodies.response_bytes == upstreams.MAX_RESPONSE_BYTES


def test_envoy_limits_and_timeouts_are_the_edge_table(config: dict[str, Any]) -> None:
    manager = http_manager(config)
    assert manager["request_headers_timeout"] == f"{EDGE.timeouts.request_headers:g}s"
    assert manager["stream_idle_timeout"] == f"{EDGE.timeouts.body_idle:g}s"
    assert manager["request_timeout"] == f"{EDGE.timeouts.request:g}s"
    options = manager["common_http_protocol_options"]
    assert options["idle_timeout"] == f"{EDGE.timeouts.connection_idle:g}s"
    assert options["max_headers_count"] == EDGE.headers.max_count
    assert manager["max_request_headers_kb"] * 1024 == EDGE.headers.max_bytes
    assert (manager["merge_slashes"], manager["normalize_path"]) == (True, True)
    assert http_filter(config, "envoy.filters.http.buffer")["max_request_bytes"] == (
        EDGE.bodies.json_bytes
    )
    transcoder = http_filter(config, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["max_request_body_size"] == EDGE.bodies.upload_bytes
    assert transcoder["max_response_body_size"] == EDGE.bodies.response_bytes
    names = [f["name"] for f in manager["http_filters"]]
    assert names.index("envoy.filters.http.buffer") < names.index(
        "envoy.filters.http.grpc_json_transcoder"
    )
    # Waiting for an upstream is bounded by the route timeout, not the body idle timeout.
    for route in routes(config):
        if route.get("route", {}).get("cluster") in envoy_config.UPSTREAMS:
            assert route["route"]["idle_timeout"] == route["route"]["timeout"]
    heap = config["overload_manager"]["resource_monitors"][0]["typed_config"]
    assert heap["max_heap_size_bytes"] == EDGE.overload.envoy_max_heap_bytes


def test_raw_uploads_get_the_upload_limit_and_json_bodies_the_json_limit(
    config: dict[str, Any], table: RouteTable
) -> None:
    raw = [r for r in table.routes if r.request.body_mode is BodyMode.RAW]
    assert raw, "the API has uploads"
    for route in table.routes:
        path = (
            "/"
            + "/".join("x-1" if s in ("*", "**") else s for s in route.template.segments)
            + (f":{route.template.verb}" if route.template.verb else "")
        )
        found = route_for(config, path, grpc=False, headers={":method": route.http_method})
        assert found is not None, path
        limit = found.get("typed_per_filter_config", {}).get("envoy.filters.http.buffer")
        if route in raw:
            assert limit is not None, path
            assert limit["buffer"]["max_request_bytes"] == EDGE.bodies.upload_bytes
        else:
            assert limit is None, path  # the filter's own limit: JSON


def test_compressed_request_bodies_are_refused_with_415_before_transcoding(
    config: dict[str, Any],
) -> None:
    for encoding in ("gzip", "br", "deflate", "GZIP"):
        route = route_for(
            config, "/v1/assets:upload", grpc=False, headers={"content-encoding": encoding}
        )
        assert route is not None
        assert route["direct_response"]["status"] == 415
        disabled = route["typed_per_filter_config"]
        assert disabled["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
        assert disabled["envoy.filters.http.buffer"]["disabled"] is True
    for headers in ({}, {"content-encoding": "identity"}):
        route = route_for(config, "/v1/projects", grpc=False, headers={":method": "GET", **headers})
        assert route is not None
        assert "direct_response" not in route


def test_local_replies_are_the_edge_table(config: dict[str, Any]) -> None:
    mappers = http_manager(config)["local_reply_config"]["mappers"]
    found = {}
    for mapper in mappers:
        status = mapper["filter"]["and_filter"]["filters"][0]["status_code_filter"]["comparison"]
        found[status["value"]["default_value"]] = mapper
    assert set(found) == set(edge.LOCAL_REPLIES)
    python_status = StatusEncoder(DescriptorSet.load(envoy_config.DESCRIPTOR_SET).pool)
    for status, reply in edge.LOCAL_REPLIES.items():
        body = found[status]["body_format_override"]["json_format"]
        assert body["code"] == reply.grpc_code
        (detail,) = body["details"]
        assert (detail["reason"], detail["domain"]) == (reply.reason, edge.ERROR_DOMAIN)
        # The Python gateway's local reply has the same code and ErrorInfo.
        printed = json.loads(python_status.local_reply(status, "m").body)
        assert printed["code"] == reply.grpc_code
        assert printed["details"][0]["reason"] == reply.reason
        assert printed["details"][0]["domain"] == edge.ERROR_DOMAIN
    retry = found[503]["headers_to_add"][0]["header"]
    assert retry == {"key": "retry-after", "value": str(EDGE.overload.retry_after_seconds)}


def test_cors_is_the_edge_table() -> None:
    rendered = envoy_config.render(envoy_config.DESCRIPTOR_SET, cors_origins=["https://a.test"])
    (host,) = http_manager(rendered)["route_config"]["virtual_hosts"]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    python = CorsPolicy(["https://a.test"])
    preflight = python.preflight_headers()
    assert policy["allow_methods"] == preflight["Access-Control-Allow-Methods"]
    assert policy["allow_headers"] == preflight["Access-Control-Allow-Headers"]
    assert policy["max_age"] == preflight["Access-Control-Max-Age"]
    exposed = python.response_headers("https://a.test")["Access-Control-Expose-Headers"]
    assert policy["expose_headers"] == exposed
    assert {"authorization", "content-type", "idempotency-key"} <= set(EDGE.cors.allow_headers)


def test_headers_the_services_read_reach_them_behind_either_gateway(
    config: dict[str, Any],
) -> None:
    route_config = http_manager(config)["route_config"]
    removed = set(route_config["request_headers_to_remove"])
    assert not removed & set(edge.FORWARDED_HEADERS)
    assert edge.SERVICE_TOKEN_HEADER in removed
    added = {h["header"]["key"] for h in route_config["request_headers_to_add"]}
    assert added == {edge.FORWARDED_USER_AGENT}
    python = dict(
        request_metadata(
            {name: "v" for name in (*edge.FORWARDED_HEADERS, "cookie", edge.SERVICE_TOKEN_HEADER)},
            "req-1",
            "127.0.0.1",
        )
    )
    assert set(edge.FORWARDED_HEADERS) <= set(python)
    assert not removed & set(python)
    assert {"idempotency-key", "stripe-signature", "authorization"} <= set(edge.FORWARDED_HEADERS)


def test_rate_limit_and_no_store_agree_with_the_python_gateway(
    config: dict[str, Any], table: RouteTable
) -> None:
    (limit,) = EDGE.rate_limits
    python_limited = table.methods_bound_under(limit.http_path_prefix)
    (auth,) = [
        r
        for r in routes(config)
        if "envoy.filters.http.local_ratelimit" in r.get("typed_per_filter_config", {})
    ]
    for name in python_limited:
        service, _, method = name.rpartition(".")
        assert route_for(config, f"/{service}/{method}") is auth
    limiter = auth["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    (retry,) = limiter["response_headers_to_add"]
    assert retry["header"] == {"key": "retry-after", "value": str(limit.retry_after_seconds())}
    assert "enable_x_ratelimit_headers" not in limiter  # the Python gateway sends none
    # Cache-Control: no-store on exactly the RPCs the Python gateway marks.
    gateway = Gateway(
        GatewaySettings(port=0), DescriptorSet.load(envoy_config.DESCRIPTOR_SET), table
    )
    for route in table.routes:
        service, _, method = route.method.full_name.rpartition(".")
        envoy_route = route_for(config, f"/{service}/{method}")
        assert envoy_route is not None
        headers = {h["header"]["key"] for h in envoy_route.get("response_headers_to_add", ())}
        assert ("cache-control" in headers) == (route.method.full_name in gateway.no_store), (
            route.method.full_name
        )
    assert "pixelshop.identity.v1.IdentityService.LogIn" in gateway.no_store


def test_every_rpc_has_the_same_deadline_behind_either_gateway(
    config: dict[str, Any], table: RouteTable
) -> None:
    """The route Envoy picks for a call (transcoded ones match on the gRPC path) has the
    deadline the Python gateway gives it: per-method entries of edge.py included."""
    settings = GatewaySettings.from_env({})
    for route in table.routes:
        method = route.method
        envoy_route = route_for(config, method.grpc_path)
        assert envoy_route is not None, method.full_name
        deadline = f"{settings.upstream_timeout(method.upstream, method.full_name):g}s"
        assert envoy_route["route"]["timeout"] == deadline, method.full_name
        assert envoy_route["route"]["idle_timeout"] == deadline, method.full_name
    assert set(EDGE.method_timeout_seconds) <= {r.method.full_name for r in table.routes}


def _projects_default(name: str) -> Any:
    (field,) = [f for f in dataclasses.fields(ProjectsSettings) if f.name == name]
    return field.default


def test_reapply_has_its_own_longer_route_before_the_projects_prefix(
    config: dict[str, Any],
) -> None:
    """A Reapply runs up to MAX_REAPPLY_STEPS AI edits, each bounded by the edit timeout."""
    projects = "pixelshop.projects.v1.ProjectService"
    edit_timeout = _projects_default("edit_timeout_seconds")
    reapply = EDGE.timeout("projects", f"{projects}.Reapply")
    apply_edit = EDGE.timeout("projects", f"{projects}.ApplyEdit")
    assert reapply == 900
    assert reapply >= 5 * edit_timeout
    assert apply_edit == EDGE.timeout("projects") == 180
    assert apply_edit > edit_timeout

    names = [r["name"] for r in routes(config)]
    prefix = route_for(config, f"/{projects}/Undo")
    assert prefix is not None
    assert prefix["name"] == projects
    for method, seconds in (("Reapply", reapply), ("ApplyEdit", apply_edit)):
        own = route_for(config, f"/{projects}/{method}")
        assert own is not None
        assert own["match"] == {"path": f"/{projects}/{method}", "grpc": {}}
        assert names.index(own["name"]) < names.index(projects)
        # Everything the prefix route does, with the method's timeout.
        assert own["route"] == {
            **prefix["route"],
            "timeout": f"{seconds:g}s",
            "idle_timeout": f"{seconds:g}s",
        }
    # Before transcoding the browser's path only meets edge routes that forward nothing;
    # the router's timeout comes from the gRPC route above.
    http = route_for(config, "/v1/projects/p-1:reapply", grpc=False, headers={":method": "POST"})
    assert http is not None
    assert http["route"] == {"cluster": envoy_config.UNTRANSCODED_CLUSTER}


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("pixelshop.projects.v1.ProjectService.Reaply", "no HTTP rule routes"),
        ("pixelshop.projects.v1.ProjectInternalService.PurgeUser", "no HTTP rule routes"),
        ("pixelshop.identity.v1.IdentityService.LogIn", "auth RPCs cannot have their own"),
    ],
)
def test_method_timeouts_must_name_routed_rpcs_outside_the_auth_route(
    monkeypatch: pytest.MonkeyPatch, method: str, message: str
) -> None:
    edge_table = dataclasses.replace(EDGE, method_timeout_seconds={method: 60.0})
    monkeypatch.setattr(envoy_config, "EDGE", edge_table)
    with pytest.raises(envoy_config.EnvoyConfigError, match=message):
        envoy_config.render(envoy_config.DESCRIPTOR_SET)


def test_a_local_envoy_can_front_one_grpc_server(tmp_path: pathlib.Path) -> None:
    """What a GATEWAY_URL conformance run against a real Envoy starts from."""
    output = tmp_path / "envoy.yaml"
    code = envoy_config.main(
        [
            "--local-upstream",
            "127.0.0.1:50099",
            "--proto-descriptor",
            str(envoy_config.DESCRIPTOR_SET),
            "--output",
            str(output),
        ]
    )
    local = yaml.safe_load(output.read_text())

    assert code == 0
    for cluster in local["static_resources"]["clusters"]:
        if cluster["name"] in envoy_config.UPSTREAMS:
            (locality,) = cluster["load_assignment"]["endpoints"]
            (endpoint,) = locality["lb_endpoints"]
            address = endpoint["endpoint"]["address"]["socket_address"]
            assert address == {"address": "127.0.0.1", "port_value": 50099}
    transcoder = http_filter(local, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str(envoy_config.DESCRIPTOR_SET)
    assert envoy_config.main(["--local-upstream", "nope", "--output", str(output)]) == 2
