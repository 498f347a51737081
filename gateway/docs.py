"""`/openapi.json` and `/docs`: the API described for frontend developers, from local files."""

from __future__ import annotations

from aiohttp import web

from gateway.descriptors import DescriptorSet

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"


def add_routes(app: web.Application, descriptors: DescriptorSet) -> None:
    """Serves the OpenAPI document generated from `descriptors` and the Swagger UI page."""
