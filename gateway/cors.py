"""CORS for the configured browser origins; it runs before routing, as in Envoy. The
methods, headers and max age come from the edge table (gateway/edge.py), which Envoy's
config is generated from too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.edge import EDGE

ALLOW_METHODS = ", ".join(EDGE.cors.allow_methods)
ALLOW_HEADERS = ", ".join(EDGE.cors.allow_headers)
EXPOSE_HEADERS = ", ".join(EDGE.cors.expose_headers)
MAX_AGE_SECONDS = str(EDGE.cors.max_age_seconds)


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
