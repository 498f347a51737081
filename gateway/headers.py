"""Which HTTP headers become gRPC metadata, and which metadata becomes HTTP headers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from gateway import edge

REQUEST_ID = "x-request-id"
FORWARDED_FOR = "x-forwarded-for"
# gRPC replaces a call's `user-agent` metadata with its own, so the browser's user agent
# travels as `x-forwarded-user-agent` (Envoy's config adds the same header).
USER_AGENT = "user-agent"
FORWARDED_USER_AGENT = edge.FORWARDED_USER_AGENT
# Request headers the services read, passed on as metadata under the same (lower-case) name;
# the request id is handled on its own (a new one when the client's is not a sane token).
FORWARDED_HEADERS = tuple(h for h in edge.FORWARDED_HEADERS if h != REQUEST_ID)
# Response metadata that describes the gRPC transport, not the resource, is not an HTTP header.
_NOT_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "date",
        "server",
        REQUEST_ID,
    }
)
_MAX_REQUEST_ID_LENGTH = 128


def request_id_of(value: str | None) -> str:
    """The client's X-Request-Id when it is a sane token, otherwise a new UUID4."""
    if value and len(value) <= _MAX_REQUEST_ID_LENGTH and _is_token(value):
        return value
    return str(uuid.uuid4())


class HeaderError(ValueError):
    """A header the gateway reads or forwards is not printable ASCII: a 400 naming it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"header {name} must be printable ASCII")
        self.header = name


def checked_header(headers: Mapping[str, str], name: str) -> str:
    """The header's value ("" when absent); HeaderError when it is not printable ASCII
    (bytes that are not UTF-8 arrive as surrogates, and gRPC metadata is ASCII)."""
    value = headers.get(name, "")
    if value and not _is_metadata_value(value):
        raise HeaderError(name)
    return value


def request_metadata(
    headers: Mapping[str, str], request_id: str, peer: str | None
) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a request. A forwarded header that is not printable ASCII raises
    HeaderError; the user agent and X-Forwarded-For, which nobody relies on, are dropped."""
    metadata = [(REQUEST_ID, request_id)]
    for name in FORWARDED_HEADERS:
        value = checked_header(headers, name)
        if value:
            metadata.append((name, value))
    user_agent = headers.get(USER_AGENT)
    if user_agent and _is_metadata_value(user_agent):
        metadata.append((FORWARDED_USER_AGENT, user_agent))
    forwarded = headers.get(FORWARDED_FOR)
    if forwarded and not _is_metadata_value(forwarded):
        forwarded = None
    if peer:
        forwarded = f"{forwarded}, {peer}" if forwarded else peer
    if forwarded:
        metadata.append((FORWARDED_FOR, forwarded))
    return tuple(metadata)


def response_headers(*metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """HTTP headers from gRPC initial and trailing metadata, as Envoy passes them on:
    everything except `grpc-*`, binary (`-bin`) keys, pseudo and hop-by-hop headers."""
    headers: dict[str, str] = {}
    for pairs in metadata:
        for key, value in pairs or ():
            if (
                isinstance(value, str)
                and not key.startswith(("grpc-", ":"))
                and not key.endswith("-bin")
                and key not in _NOT_HEADERS
            ):
                headers[key] = value
    return headers


def _is_token(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _is_metadata_value(value: str) -> bool:
    return value.isascii() and value.isprintable()
