"""OpenAPI 3.1 from the descriptor set: committed, valid, served, and true to the transcoder.

The last claim is checked by sending a request generated from the document for every
documented operation through the gateway: each reaches its RPC with every documented path
and query parameter landing in the request message, and every route is documented.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import httpx
import pytest
from gateway_descriptors import shelf_descriptors
from gateway_fakes import Recorder
from gateway_harness import in_process_only
from google.protobuf import json_format
from openapi_spec_validator import validate

from gateway import edge, openapi
from gateway.descriptors import DescriptorSet
from gateway.routes import RouteTable
from gateway.settings import DEFAULT_DESCRIPTOR_SET
from tools import openapi as openapi_tool

DESCRIPTORS = DescriptorSet.load(DEFAULT_DESCRIPTOR_SET)
TABLE = RouteTable.from_descriptor_set(DESCRIPTORS)
DOCUMENT = openapi.build(DESCRIPTORS, TABLE)
VERBS = ("get", "put", "post", "delete", "patch")


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, verb, operation)
        for path, item in document["paths"].items()
        for verb, operation in item.items()
        if verb in VERBS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def example(document: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value of the schema, as a client would write it from the document alone."""
    schema = resolve(document, schema)
    kinds = schema.get("type", "object")
    kind = next(k for k in kinds if k != "null") if isinstance(kinds, list) else kinds
    if "enum" in schema:
        return next(v for v in schema["enum"] if not v.endswith("_UNSPECIFIED"))
    if schema.get("format") == "date-time":
        return "2024-01-02T03:04:05Z"
    if kind == "string":
        return "7" if schema.get("format") in ("int64", "uint64") else "x-1"
    if kind == "integer":
        return 7
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [example(document, schema["items"], depth + 1)]
    if depth > 3:
        return {}
    return {
        name: example(document, schema["properties"][name], depth + 1)
        for name in schema.get("required", ())
        if not schema["properties"][name].get("readOnly")
    }


def query_value(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def camel(dotted: str) -> str:
    return ".".join(
        re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in dotted.split(".")
    )


def dig(document: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        assert isinstance(document, dict), (dotted, document)
        assert name in document, (dotted, document)
        document = document[name]
    return document


def test_committed_document_is_what_the_descriptor_set_gives() -> None:
    assert openapi_tool.OUTPUT.read_text() == openapi_tool.render(DEFAULT_DESCRIPTOR_SET), (
        "gen/openapi.json is stale: run make proto"
    )
    assert openapi_tool.main(["--check"]) == 0


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)
    validate(openapi.build(shelf_descriptors()))


def test_every_route_is_documented_and_every_operation_routed() -> None:
    documented = {(verb.upper(), path) for path, verb, _ in operations(DOCUMENT)}
    routed = {(r.http_method, openapi._openapi_path(r)[0]) for r in TABLE.routes}
    assert documented == routed
    ids = [op["operationId"] for _, _, op in operations(DOCUMENT)]
    assert len(ids) == len(set(ids))
    assert {r.method.full_name.rsplit(".", 1)[1] for r in TABLE.routes} == set(ids)


@in_process_only
async def test_served_document_is_the_generated_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads(openapi_tool.OUTPUT.read_text())


@pytest.mark.parametrize(
    ("path", "verb", "operation"),
    operations(DOCUMENT),
    ids=[op["operationId"] for _, _, op in operations(DOCUMENT)],
)
async def test_a_request_built_from_the_document_reaches_its_rpc(
    client: httpx.AsyncClient,
    recorder: Recorder,
    path: str,
    verb: str,
    operation: dict[str, Any],
) -> None:
    url = path
    params: list[tuple[str, str]] = []
    expected: dict[str, Any] = {}
    for parameter in operation.get("parameters", ()):
        value = example(DOCUMENT, parameter["schema"])
        if parameter["in"] == "path":
            # Templates name fields as the proto does; the printed request uses JSON names.
            url = url.replace("{" + parameter["name"] + "}", str(value))
            expected[camel(parameter["name"])] = value
        else:
            params += [(parameter["name"], v) for v in query_value(value)]
            expected[parameter["name"]] = value
    kwargs: dict[str, Any] = {}
    body = operation.get("requestBody")
    if body is not None:
        ((media, content),) = list(body["content"].items())[:1]
        if media == "application/json":
            kwargs["json"] = example(DOCUMENT, content["schema"])
        else:
            kwargs["content"] = b"\x89PNG raw bytes"
            kwargs["headers"] = {"Content-Type": "image/png" if "*" in media else media}
    response = await client.request(verb.upper(), url, params=params, **kwargs)

    assert response.status_code == 200, response.text
    received = recorder.last()
    assert received.path.rsplit("/", 1)[1] == operation["operationId"].split("_")[0]
    printed = json_format.MessageToDict(received.request)
    for name, value in expected.items():
        landed = dig(printed, name)
        if isinstance(value, int) and not isinstance(value, bool):
            landed = int(landed)
        assert landed == value, name
    security = operation["security"]
    anonymous = security == []
    rpc = next(r for r in TABLE.routes if r.method.grpc_path == received.path).method
    assert anonymous == (rpc.full_name in edge.ANONYMOUS_RPCS)


def test_schemas_are_proto3_json() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    sign_up = schemas["pixelshop.identity.v1.SignUpRequest"]
    assert sign_up["required"] == ["email", "username", "password"]  # REQUIRED
    assert "displayName" in sign_up["properties"]  # lowerCamelCase
    user = schemas["pixelshop.identity.v1.User"]
    assert user["properties"]["id"]["readOnly"] is True  # OUTPUT_ONLY
    assert user["properties"]["createTime"]["format"] == "date-time"  # Timestamp
    assert user["description"] == "A Pixelshop account."  # from the proto comment
    asset = schemas["pixelshop.assets.v1.Asset"]
    assert asset["properties"]["sizeBytes"]["type"] == "string"  # int64 as a string
    kind = resolve(DOCUMENT, asset["properties"]["kind"])
    assert "ASSET_KIND_UPLOAD" in kind["enum"]  # enums by name
    tier = schemas["pixelshop.identity.v1.Tier"]
    assert tier["properties"]["features"]["type"] == "object"  # Struct
    status = schemas["google.rpc.Status"]
    assert set(status["properties"]) == {"code", "message", "details"}


def test_operations_describe_bodies_errors_and_security() -> None:
    paths = DOCUMENT["paths"]
    upload = paths["/v1/assets:upload"]["post"]
    (media,) = upload["requestBody"]["content"]
    assert media.startswith("image/")  # HttpBody: raw bytes with their media type
    content = paths["/v1/assets/{asset_id}:content"]["get"]["responses"]["200"]["content"]
    assert next(iter(content.values()))["schema"]["type"] == "string"
    log_in = paths["/v1/auth:logIn"]["post"]
    assert log_in["security"] == []
    assert "429" in log_in["responses"]  # rate limited
    assert "Cache-Control" in log_in["responses"]["200"]["headers"]
    assert log_in["tags"] == ["IdentityService"]
    assert log_in["description"].startswith("Starts a session")
    me = paths["/v1/users/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    assert {"401", "404", "500", "503"} <= set(me["responses"])
    error = DOCUMENT["components"]["responses"]["Error401"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("google.rpc.Status")
    presets = {p["name"]: p for p in paths["/v1/presets"]["get"]["parameters"]}
    assert {"category", "scope", "orderBy", "pageSize", "pageToken"} <= set(presets)
    reapply = paths["/v1/projects/{project_id}:reapply"]["post"]
    assert reapply["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ReapplyRequest.Body"
    )
    body = DOCUMENT["components"]["schemas"]["pixelshop.projects.v1.ReapplyRequest.Body"]
    assert "projectId" not in body["properties"]  # bound by the path


def test_bindings_the_pixelshop_protos_do_not_use() -> None:
    document = openapi.build(shelf_descriptors())
    get_book = [op for _, _, op in operations(document) if op["operationId"].startswith("GetBook")]
    assert sorted(op["operationId"] for op in get_book) == [
        "GetBook",
        "GetBook_2",
        "GetBook_3",
        "GetBook_4",
        "GetBook_5",
    ]
    by_books = document["paths"]["/v1/books/{name}"]["get"]
    tags = next(p for p in by_books["parameters"] if p["name"] == "tags")
    assert tags["schema"]["type"] == "array"  # repeated by repetition
    dotted = {p["name"] for p in by_books["parameters"]}
    assert "author.bornYear" in dotted  # nested fields by dotted name
    assert "labels" not in dotted  # maps cannot be set from the query
    stream = document["paths"]["/v1/{shelf}/books"]["get"]["responses"]["200"]
    assert stream["content"]["application/json"]["schema"]["type"] == "array"
    author = document["paths"]["/v1/books/{name}/author"]["get"]["responses"]["200"]
    assert author["content"]["application/json"]["schema"]["$ref"].endswith("Author")
    assert "/v1/books:batchAdd" not in document["paths"]  # client streaming is not routed


def test_anonymous_rpcs_are_the_ones_the_services_let_in() -> None:
    """The document's open operations are exactly the methods the services' AuthPolicy lets
    in without a token (identity's list and billing's Stripe webhook)."""
    from services.billing.server import WEBHOOK_METHOD
    from services.identity.api import ANONYMOUS_METHODS

    def grpc_path(name: str) -> str:
        service, _, method = name.rpartition(".")
        return f"/{service}/{method}"

    assert {grpc_path(n) for n in edge.ANONYMOUS_RPCS} == {*ANONYMOUS_METHODS, WEBHOOK_METHOD}
    routed = {r.method.full_name for r in TABLE.routes}
    assert routed >= edge.ANONYMOUS_RPCS
    # No other service lets anyone in without a token: a new one must be listed in edge.py.
    services = pathlib.Path(__file__).resolve().parents[2] / "services"
    declaring = sorted(
        path.parent.name
        for path in services.glob("*/*.py")
        if "anonymous_methods=" in path.read_text()
    )
    assert declaring == ["billing", "identity"]


@in_process_only
async def test_docs_page_is_served_from_local_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources
    assert all(s.startswith("/docs/") for s in sources)
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200, source
    init = await client.get("/docs/init.js")
    assert '"/openapi.json"' in init.text
    assert "validatorUrl: null" in init.text
    for other in ("/docs/../gateway/edge.py", "/docs/index.j2", "/docs/swagger-ui.js.map"):
        missing = await client.get(other)
        assert missing.status_code == 404
        assert missing.json()["details"][0]["reason"] == "ROUTE_NOT_FOUND"


def test_the_swagger_ui_bundle_is_a_local_package() -> None:
    from gateway.docs import ASSETS, swagger_ui_dir

    folder = swagger_ui_dir()
    assert all((folder / name).is_file() for name in ASSETS)
    assert pathlib.Path(folder).is_relative_to(pathlib.Path(__file__).anchor)
