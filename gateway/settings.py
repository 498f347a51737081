"""Gateway settings: one typed object, read from `PIXELSHOP_GATEWAY_*` once at start-up."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from collections.abc import Mapping
from types import MappingProxyType

from gateway.edge import EDGE, SUPPORTED_REQUEST_DECOMPRESSION
from runtime.settings import SettingsError, load_settings, shared

ENV_PREFIX = "PIXELSHOP_GATEWAY_"

# Resolved from the package, not the working directory, so `python -m gateway` works anywhere.
DEFAULT_DESCRIPTOR_SET = pathlib.Path(__file__).resolve().parents[1] / "gen" / "pixelshop.binpb"

# Upstream per service; a gRPC method's service is the <svc> of its package `pixelshop.<svc>.v1`.
DEFAULT_UPSTREAMS: Mapping[str, str] = MappingProxyType(
    {
        "identity": "127.0.0.1:50051",
        "projects": "127.0.0.1:50052",
        "assets": "127.0.0.1:50053",
        "presets": "127.0.0.1:50054",
        "billing": "127.0.0.1:50055",
    }
)

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# host:port, or a target with a resolver scheme (dns:///projects:50052, unix:/run/x.sock).
_TARGET = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:\S+|\S+:\d{1,5})$")
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/\s]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Environment:
    """What the environment may say, read like every service's settings. Upstream
    addresses fall back to the shared `PIXELSHOP_<SERVICE>_ADDR` the services use."""

    host: str = "127.0.0.1"
    port: int = 8080
    descriptor_set: str = str(DEFAULT_DESCRIPTOR_SET)
    identity_addr: str = shared(DEFAULT_UPSTREAMS["identity"])
    projects_addr: str = shared(DEFAULT_UPSTREAMS["projects"])
    assets_addr: str = shared(DEFAULT_UPSTREAMS["assets"])
    presets_addr: str = shared(DEFAULT_UPSTREAMS["presets"])
    billing_addr: str = shared(DEFAULT_UPSTREAMS["billing"])
    cors_origins: tuple[str, ...] = ()
    json_body_max_bytes: int = EDGE.bodies.json_bytes
    upload_body_max_bytes: int = EDGE.bodies.upload_bytes
    inflight_max_bytes: int = EDGE.overload.inflight_request_bytes
    request_decompression: str = ""
    auth_rate_limit_per_minute: int = EDGE.rate_limits[0].requests_per_minute
    timeout_seconds: float = 0.0
    request_headers_timeout_seconds: float = EDGE.timeouts.request_headers
    body_idle_timeout_seconds: float = EDGE.timeouts.body_idle
    request_timeout_seconds: float = EDGE.timeouts.request
    idle_timeout_seconds: float = EDGE.timeouts.connection_idle
    log_level: str = shared("INFO")
    log_json: bool = shared(True)


def env_name(setting: str) -> str:
    """`json_body_max_bytes` -> `PIXELSHOP_GATEWAY_JSON_BODY_MAX_BYTES`."""
    return ENV_PREFIX + setting.upper()


def upstream_env_name(service: str) -> str:
    """`identity` -> `PIXELSHOP_GATEWAY_IDENTITY_ADDR`."""
    return f"{ENV_PREFIX}{service.upper()}_ADDR"


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway can be told; validated on construction."""

    host: str = "127.0.0.1"
    port: int = 8080
    descriptor_set: pathlib.Path = DEFAULT_DESCRIPTOR_SET
    # Service name (the <svc> of `pixelshop.<svc>.v1`) -> gRPC target, e.g. "127.0.0.1:50051".
    upstreams: Mapping[str, str] = dataclasses.field(default_factory=lambda: DEFAULT_UPSTREAMS)
    # Browser origins allowed by CORS, e.g. "https://app.pixelshop.example"; "*" allows any.
    cors_origins: tuple[str, ...] = ()
    # Request bodies: JSON ones, and raw google.api.HttpBody uploads (413 beyond).
    json_body_max_bytes: int = EDGE.bodies.json_bytes
    upload_body_max_bytes: int = EDGE.bodies.upload_bytes
    # Request bytes held at once by this process; beyond it 503 with Retry-After.
    inflight_max_bytes: int = EDGE.overload.inflight_request_bytes
    # "" refuses compressed request bodies (415); "gzip" inflates gzip bodies, the
    # inflated size counting against the body limits.
    request_decompression: str = ""
    # Per client address, on the RPCs bound under /v1/auth: (edge.py); 0 turns it off.
    auth_rate_limit_per_minute: int = EDGE.rate_limits[0].requests_per_minute
    # Deadline of every upstream call, overriding edge.py's tables; 0 keeps them (per
    # method, then per upstream: 30 s, projects 180 s, Reapply 900 s), as Envoy's routes.
    timeout_seconds: float = 0.0
    # Client-side timeouts (408 or a closed connection), as Envoy's connection manager.
    request_headers_timeout_seconds: float = EDGE.timeouts.request_headers
    body_idle_timeout_seconds: float = EDGE.timeouts.body_idle
    request_timeout_seconds: float = EDGE.timeouts.request
    idle_timeout_seconds: float = EDGE.timeouts.connection_idle
    # Like the services: PIXELSHOP_GATEWAY_LOG_LEVEL, else PIXELSHOP_LOG_LEVEL.
    log_level: str = "INFO"
    log_json: bool = True

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise SettingsError(f"{env_name('host')} must not be empty")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"{env_name('port')} must be 0-65535, got {self.port}")
        for service, target in self.upstreams.items():
            if not _SERVICE_NAME.match(service):
                raise SettingsError(f"upstream service name {service!r} must match [a-z][a-z0-9_]*")
            if not _TARGET.match(target):
                raise SettingsError(
                    f"{upstream_env_name(service)} must be a gRPC target such as "
                    f"127.0.0.1:50051, got {target!r}"
                )
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise SettingsError(
                    f"{env_name('cors_origins')} entries must be '*' or scheme://host[:port] "
                    f"without a path, got {origin!r}"
                )
        for name in ("json_body_max_bytes", "upload_body_max_bytes", "inflight_max_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(
                    f"{env_name(name)} must be at least 1, got {getattr(self, name)}"
                )
        if self.request_decompression not in ("", *SUPPORTED_REQUEST_DECOMPRESSION):
            raise SettingsError(
                f"{env_name('request_decompression')} must be empty (refuse compressed bodies) "
                f"or one of {', '.join(SUPPORTED_REQUEST_DECOMPRESSION)}, "
                f"got {self.request_decompression!r}"
            )
        if self.auth_rate_limit_per_minute < 0:
            raise SettingsError(
                f"{env_name('auth_rate_limit_per_minute')} must be 0 (off) or more, "
                f"got {self.auth_rate_limit_per_minute}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"{env_name('log_level')} must be DEBUG, INFO, WARNING or ERROR")
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds >= 0):
            raise SettingsError(
                f"{env_name('timeout_seconds')} must be 0 (the edge table) or a "
                f"positive number of seconds, got {self.timeout_seconds}"
            )
        for name in (
            "request_headers_timeout_seconds",
            "body_idle_timeout_seconds",
            "request_timeout_seconds",
            "idle_timeout_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(
                    f"{env_name(name)} must be a positive number of seconds, got {value}"
                )

    def upstream_timeout(self, upstream: str, method: str | None = None) -> float:
        """Deadline of a call to `method` (an RPC full name) on `upstream`. A nonzero
        `timeout_seconds` is the deadline of every call, per-method entries included
        (shorter or longer); 0 keeps edge.py's tables, which Envoy's routes are made from."""
        return self.timeout_seconds or EDGE.timeout(upstream, method)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """Reads `PIXELSHOP_GATEWAY_*`; unset variables keep their defaults."""
        env = load_settings(_Environment, ENV_PREFIX, environ)
        descriptor_set = pathlib.Path(env.descriptor_set.strip())
        if not descriptor_set.is_file():
            raise SettingsError(
                f"{env_name('descriptor_set')} must name a descriptor set file "
                f"(make proto builds it), {descriptor_set} does not exist"
            )
        upstreams = {
            service: str(getattr(env, f"{service}_addr")).strip() for service in DEFAULT_UPSTREAMS
        }
        return cls(
            host=env.host.strip(),
            port=env.port,
            descriptor_set=descriptor_set,
            upstreams=MappingProxyType(upstreams),
            cors_origins=env.cors_origins,
            json_body_max_bytes=env.json_body_max_bytes,
            upload_body_max_bytes=env.upload_body_max_bytes,
            inflight_max_bytes=env.inflight_max_bytes,
            request_decompression=env.request_decompression.strip().lower(),
            auth_rate_limit_per_minute=env.auth_rate_limit_per_minute,
            timeout_seconds=env.timeout_seconds,
            request_headers_timeout_seconds=env.request_headers_timeout_seconds,
            body_idle_timeout_seconds=env.body_idle_timeout_seconds,
            request_timeout_seconds=env.request_timeout_seconds,
            idle_timeout_seconds=env.idle_timeout_seconds,
            log_level=env.log_level.strip().upper(),
            log_json=env.log_json,
        )
