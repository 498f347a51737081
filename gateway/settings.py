"""Gateway settings: one typed object, read from `PIXELSHOP_GATEWAY_*` once at start-up."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from collections.abc import Mapping
from types import MappingProxyType

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


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def env_name(setting: str) -> str:
    """`max_body_bytes` -> `PIXELSHOP_GATEWAY_MAX_BODY_BYTES`."""
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
    max_body_bytes: int = 64 * 1024 * 1024
    # Per client address, on /v1/auth:* paths; 0 turns the limit off.
    auth_rate_limit_per_minute: int = 600
    # Deadline of each upstream call; AI edits take tens of seconds.
    timeout_seconds: float = 120.0
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
        if self.max_body_bytes < 1:
            raise SettingsError(
                f"{env_name('max_body_bytes')} must be at least 1, got {self.max_body_bytes}"
            )
        if self.auth_rate_limit_per_minute < 0:
            raise SettingsError(
                f"{env_name('auth_rate_limit_per_minute')} must be 0 (off) or more, "
                f"got {self.auth_rate_limit_per_minute}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"{env_name('log_level')} must be DEBUG, INFO, WARNING or ERROR")
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds > 0):
            raise SettingsError(
                f"{env_name('timeout_seconds')} must be a positive number of seconds, "
                f"got {self.timeout_seconds}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """Reads `PIXELSHOP_GATEWAY_*`; unset variables keep their defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(setting: str, default: str) -> str:
            return env.get(env_name(setting), default).strip()

        def integer(setting: str, default: int) -> int:
            raw = text(setting, str(default))
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(
                    f"{env_name(setting)} must be an integer, got {raw!r}"
                ) from None

        def number(setting: str, default: float) -> float:
            raw = text(setting, str(default))
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{env_name(setting)} must be a number, got {raw!r}") from None

        upstreams = {
            service: env.get(upstream_env_name(service), default).strip()
            for service, default in DEFAULT_UPSTREAMS.items()
        }
        descriptor_set = pathlib.Path(text("descriptor_set", str(defaults.descriptor_set)))
        if not descriptor_set.is_file():
            raise SettingsError(
                f"{env_name('descriptor_set')} must name a descriptor set file "
                f"(make proto builds it), {descriptor_set} does not exist"
            )
        origins = tuple(o.strip() for o in text("cors_origins", "").split(",") if o.strip())
        return cls(
            host=text("host", defaults.host),
            port=integer("port", defaults.port),
            descriptor_set=descriptor_set,
            upstreams=MappingProxyType(upstreams),
            cors_origins=origins,
            max_body_bytes=integer("max_body_bytes", defaults.max_body_bytes),
            auth_rate_limit_per_minute=integer(
                "auth_rate_limit_per_minute", defaults.auth_rate_limit_per_minute
            ),
            timeout_seconds=number("timeout_seconds", defaults.timeout_seconds),
            log_level=text("log_level", env.get("PIXELSHOP_LOG_LEVEL", defaults.log_level)).upper(),
            log_json=text("log_json", env.get("PIXELSHOP_LOG_JSON", "true")).lower()
            not in ("0", "false", "no", "off"),
        )
