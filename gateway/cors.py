"""CORS for the configured browser origins; it runs before transcoding, as in Envoy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ALLOW_METHODS = "GET, POST, PATCH, DELETE"
ALLOW_HEADERS = "authorization, content-type, x-request-id, stripe-signature"
# Response headers a browser script may read.
EXPOSE_HEADERS = "x-request-id, retry-after, content-disposition"
# Browsers cap this (Chrome at two hours); an hour saves most preflights.
MAX_AGE_SECONDS = "3600"


class CorsPolicy:
    """Answers preflights and decorates responses for allowed origins; ignores all others."""

    def __init__(self, origins: Iterable[str]) -> None:
        self._origins = frozenset(origins)
        self._any = "*" in self._origins

    def allowed_origin(self, origin: str | None) -> str | None:
        """The origin to echo in Access-Control-Allow-Origin, or None for no CORS at all."""
        if origin and (self._any or origin in self._origins):
            return origin
        return None

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        return method == "OPTIONS" and "Access-Control-Request-Method" in headers

    @staticmethod
    def preflight_headers() -> dict[str, str]:
        return {
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE_SECONDS,
        }

    @staticmethod
    def response_headers(origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            "Vary": "Origin",
        }
