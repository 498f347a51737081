"""The HTTP edge policy: one table of limits, timeouts, CORS, forwarded headers, rate limits
and local error replies, read by the Python gateway (gateway/server.py) and by the Envoy
generator (tools/envoy_config.py). tests/deploy/test_envoy_config.py checks that the
rendered Envoy config says what this table says, so dev and prod cannot drift apart.

Plain data only (no aiohttp, no grpc): the Envoy generator imports it too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

KIB = 1024
MIB = 1024 * KIB


@dataclasses.dataclass(frozen=True, slots=True)
class BodyLimits:
    """Bytes a request or response may hold. Beyond a body limit: 413."""

    # JSON request bodies (every route whose body is not a google.api.HttpBody).
    json_bytes: int = 1 * MIB
    # Raw google.api.HttpBody request bodies (image uploads, the Stripe webhook).
    upload_bytes: int = 64 * MIB
    # Responses: an HttpBody download is at most one stored object (an upload at the
    # limit, plus the message's framing).
    response_bytes: int = 65 * MIB
    # JSON bodies larger than this are parsed in a worker thread, off the event loop.
    parse_off_loop_bytes: int = 64 * KIB


@dataclasses.dataclass(frozen=True, slots=True)
class Overload:
    """Per process: memory held by request bodies at once (read, parsed, serialized for the
    upstream; each copy counts). A request that would exceed it is answered 503 with
    Retry-After before its body is read. Envoy bounds the same thing through its overload
    manager (heap size), not a byte count."""

    inflight_request_bytes: int = 512 * MIB
    retry_after_seconds: int = 1
    # Envoy: shed load before the kernel kills the pod (deploy/k8s gives it 1 GiB).
    envoy_max_heap_bytes: int = 768 * MIB
    envoy_max_downstream_connections: int = 50_000


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Request line plus headers, as Envoy's `max_request_headers_kb` counts them: 431 beyond."""

    max_bytes: int = 32 * KIB
    max_count: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. The client-side ones answer 408 (or close an idle connection)."""

    # From the first byte of a request to the end of its headers (slowloris).
    request_headers: float = 10.0
    # No body byte for this long while a body is being read (a trickling upload): 408.
    body_idle: float = 30.0
    # The whole request, headers and body, received within this.
    request: float = 300.0
    # A keep-alive connection with no request in progress is closed after this.
    connection_idle: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Preflights are answered before routing with what the API uses."""

    allow_methods: tuple[str, ...] = ("GET", "POST", "PATCH", "DELETE")
    allow_headers: tuple[str, ...] = (
        "authorization",
        "content-type",
        "idempotency-key",
        "x-request-id",
    )
    # Response headers a browser script may read.
    expose_headers: tuple[str, ...] = ("x-request-id", "retry-after", "content-disposition")
    # Browsers cap this (Chrome at two hours); an hour saves most preflights.
    max_age_seconds: int = 3600


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per client address shared by every RPC with an HTTP binding under
    `http_path_prefix`. The key is the matched RPC, never the raw request path, so
    `/v1/auth/:logIn` or `/v1/auth//:refresh` count like `/v1/auth:logIn`."""

    name: str
    http_path_prefix: str
    requests_per_minute: int

    def refill_interval_seconds(self, per_minute: int | None = None) -> float:
        """One token comes back every this many seconds (Envoy: `fill_interval`)."""
        return 60.0 / (per_minute or self.requests_per_minute)

    def retry_after_seconds(self, per_minute: int | None = None) -> int:
        """What a rejected client is told to wait, at most: one refill, rounded up."""
        return max(1, math.ceil(self.refill_interval_seconds(per_minute)))


@dataclasses.dataclass(frozen=True, slots=True)
class LocalReply:
    """An answer the edge gives itself, as google.rpc.Status JSON with an ErrorInfo."""

    grpc_code: int
    reason: str


# HTTP status -> the Status both gateways answer. Envoy's local_reply_config maps its own
# local replies (router 404, buffer 413, timeouts 408, overload 503...) to the same shape.
LOCAL_REPLIES: Mapping[int, LocalReply] = MappingProxyType(
    {
        400: LocalReply(3, "BAD_REQUEST"),  # INVALID_ARGUMENT
        404: LocalReply(5, "ROUTE_NOT_FOUND"),  # NOT_FOUND
        408: LocalReply(4, "REQUEST_TIMEOUT"),  # DEADLINE_EXCEEDED
        413: LocalReply(8, "REQUEST_TOO_LARGE"),  # RESOURCE_EXHAUSTED
        415: LocalReply(3, "UNSUPPORTED_CONTENT_ENCODING"),  # INVALID_ARGUMENT
        429: LocalReply(8, "RATE_LIMITED"),  # RESOURCE_EXHAUSTED
        431: LocalReply(8, "HEADERS_TOO_LARGE"),  # RESOURCE_EXHAUSTED
        503: LocalReply(14, "UNAVAILABLE"),  # UNAVAILABLE
    }
)
ERROR_DOMAIN = "gateway.pixelshop"

# Request headers the services read, passed on as gRPC metadata under the same name.
# (Envoy passes every header on; it removes the ones in REMOVED_REQUEST_HEADERS.)
FORWARDED_HEADERS: tuple[str, ...] = (
    "authorization",
    "idempotency-key",
    "stripe-signature",
    "x-request-id",
)
# gRPC replaces a call's `user-agent` with its own: the browser's travels as this.
FORWARDED_USER_AGENT = "x-forwarded-user-agent"
# Only services hold this credential (docs/adr/0005); one arriving from outside is dropped.
SERVICE_TOKEN_HEADER = "x-pixelshop-service-token"
REMOVED_REQUEST_HEADERS: tuple[str, ...] = (SERVICE_TOKEN_HEADER, "cookie")

# RPCs callable without an access token (SPEC section 6); every other routed RPC needs
# `Authorization: Bearer`. The OpenAPI document marks exactly these as open; a test checks
# the list against the services' own AuthPolicy.
ANONYMOUS_RPCS: frozenset[str] = frozenset(
    {
        *(
            f"pixelshop.identity.v1.IdentityService.{name}"
            for name in (
                "SignUp",
                "LogIn",
                "Refresh",
                "LogOut",
                "RequestPasswordReset",
                "ResetPassword",
                "VerifyEmail",
                "ListTiers",
                "GetJwks",
            )
        ),
        # Stripe calls it; the Stripe-Signature header authenticates it.
        "pixelshop.billing.v1.BillingService.HandleStripeWebhook",
    }
)

# Compressed request bodies are refused (415): inflating them is how a 63 KB request
# becomes 64 MiB. A deployment may deliberately turn on one decompressor; the inflated
# bytes then count against the body limits above.
SUPPORTED_REQUEST_DECOMPRESSION: tuple[str, ...] = ("gzip",)

# Path normalization, as Envoy's http_connection_manager is configured: `//` merged into
# `/`, `.` and `..` segments resolved (RFC 3986), before routing and rate limiting.
MERGE_SLASHES = True
NORMALIZE_PATH = True

# Responses of RPCs whose response message carries a credential (a field named `token` or
# `*_token` other than page tokens, or a signed `url`/`*_url`) get this header.
NO_STORE = "no-store"
_NOT_CREDENTIALS = frozenset({"page_token", "next_page_token"})


def is_credential_field(name: str) -> bool:
    """A response field that holds a bearer credential (token or signed URL)."""
    if name in _NOT_CREDENTIALS:
        return False
    return name in ("token", "url") or name.endswith(("_token", "_url"))


@dataclasses.dataclass(frozen=True, slots=True)
class EdgePolicy:
    bodies: BodyLimits = BodyLimits()
    overload: Overload = Overload()
    headers: HeaderLimits = HeaderLimits()
    timeouts: Timeouts = Timeouts()
    cors: CorsPolicy = CorsPolicy()
    rate_limits: tuple[RateLimit, ...] = (
        RateLimit(name="auth", http_path_prefix="/v1/auth:", requests_per_minute=600),
    )
    # Deadline of each upstream call, per upstream; AI edits take minutes.
    upstream_timeout_seconds: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType({"projects": 180.0})
    )
    # Per RPC (full name, as RpcMethod.full_name spells it), before the upstream's: Envoy
    # gives each an exact route of its own. Every name must be a routed RPC (tested).
    method_timeout_seconds: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType(
            {
                # One AI edit: the engine's edit timeout (projects' EDIT_TIMEOUT_SECONDS,
                # 120 s) plus the reservation, the upload of the result and the settling.
                # Listed so that it does not follow a change of the projects default.
                "pixelshop.projects.v1.ProjectService.ApplyEdit": 180.0,
                # Several AI edits in a row (up to MAX_REAPPLY_STEPS, 20, each bounded by
                # the edit timeout): 900 s holds 7 edits at their worst, or 20 that take
                # 45 s on average. A longer one is cut off with 504, and a retry with the
                # same requestId resumes it (step n is keyed `<requestId>/n`, so finished
                # steps are answered from the history, not run again).
                "pixelshop.projects.v1.ProjectService.Reapply": 900.0,
            }
        )
    )
    default_upstream_timeout_seconds: float = 30.0

    def timeout(self, upstream: str, method: str | None = None) -> float:
        """Deadline of a call to `method` (an RPC full name) on `upstream`: the method's
        entry, else the upstream's, else the default. Without a method: the upstream's."""
        if method is not None and method in self.method_timeout_seconds:
            return self.method_timeout_seconds[method]
        return self.upstream_timeout_seconds.get(upstream, self.default_upstream_timeout_seconds)


EDGE = EdgePolicy()
