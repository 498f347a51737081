"""`/openapi.json` and `/docs`: the API described for frontend developers.

The document is built at start-up from the descriptor set the gateway routes with (the same
generator writes gen/openapi.json). `/docs` is Swagger UI from the `swagger-ui-bundle-v2`
package, served from local files: the page loads nothing from any other host.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from aiohttp import web

from gateway import openapi
from gateway.descriptors import DescriptorSet
from gateway.routes import RouteTable

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
# Swagger UI's own files, served under /docs/.
ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
    "oauth2-redirect.html",
)

INDEX = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Pixelshop API reference</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
    <style>body { margin: 0 } .topbar { display: none }</style>
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="/docs/init.js" charset="UTF-8"></script>
  </body>
</html>
"""

# No validator badge (it would call validator.swagger.io), tokens kept across reloads.
INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    tryItOutEnabled: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout"
  });
};
"""

# The page runs only our own scripts and talks only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def swagger_ui_dir() -> pathlib.Path:
    import swagger_ui_bundle

    return pathlib.Path(str(swagger_ui_bundle.swagger_ui_path))


def add_routes(app: web.Application, descriptors: DescriptorSet, routes: RouteTable) -> None:
    """Serves the OpenAPI document for `descriptors` and the Swagger UI page."""
    document = json.dumps(openapi.build(descriptors, routes), ensure_ascii=False).encode()
    assets = swagger_ui_dir()
    security = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html", headers=security)

    async def init(request: web.Request) -> web.Response:
        return web.Response(text=INIT, content_type="application/javascript")

    def asset(name: str) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(
                assets / name, headers={"Cache-Control": "public, max-age=3600"}
            )

        return serve

    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.router.add_get(DOCS_PATH, index)
    app.router.add_get(DOCS_PATH + "/", index)
    app.router.add_get(DOCS_PATH + "/init.js", init)
    # Exact paths only: anything else under /docs/ is the gateway's 404 (Status JSON).
    for name in ASSETS:
        app.router.add_get(f"{DOCS_PATH}/{name}", asset(name))
