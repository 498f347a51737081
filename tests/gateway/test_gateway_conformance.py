"""Table-driven conformance: HTTP requests through the gateway, checked against the gRPC
request the fake upstream received (proto field names) and the JSON the client got back."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import pytest
from gateway_fakes import BIG_VERSION, PNG_BYTES, THUMBNAIL_BYTES, Recorder
from google.protobuf import json_format

from gateway.descriptors import DescriptorSet
from gateway.path_template import MULTI_WILDCARD, SINGLE_WILDCARD
from gateway.routes import Route, RouteTable
from gateway.settings import DEFAULT_DESCRIPTOR_SET
from gateway.transcoder import BodyMode

PROJECTS = "/pixelshop.projects.v1.ProjectService/"
PRESETS = "/pixelshop.presets.v1.PresetService/"
IDENTITY = "/pixelshop.identity.v1.IdentityService/"
ASSETS = "/pixelshop.assets.v1.AssetService/"
BILLING = "/pixelshop.billing.v1.BillingService/"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    method: str
    url: str
    grpc: str  # the gRPC method the upstream must receive
    request: dict[str, Any]  # the request it must receive, with proto field names
    json: Any = None
    response: dict[str, Any] | None = None  # the exact JSON answer, when the case checks it


CASES = [
    # Verbs and path variables.
    Case(
        "get-path-variable",
        "GET",
        "/v1/projects/p-1",
        PROJECTS + "GetProject",
        {"project_id": "p-1"},
        response={
            "project": {
                "id": "p-1",
                "name": "Holiday",
                "originalAssetId": "a-1",
                "version": str(BIG_VERSION),  # int64 as a string
                "canUndo": True,  # editCount, canRedo, headEditId: defaults, omitted
                "createTime": "2023-11-14T22:13:20Z",
            }
        },
    ),
    Case(
        "percent-decoded-variable",
        "GET",
        "/v1/projects/a%20b%2Fc",
        PROJECTS + "GetProject",
        {"project_id": "a b/c"},
    ),
    Case(
        "trailing-slash-ignored",
        "GET",
        "/v1/projects/p-1/",
        PROJECTS + "GetProject",
        {"project_id": "p-1"},
    ),
    Case(
        "patch-body-star-with-variable",
        "PATCH",
        "/v1/projects/p-1",
        PROJECTS + "UpdateProject",
        {"project_id": "p-1", "name": "Renamed"},
        json={"name": "Renamed"},
    ),
    Case(
        "delete",
        "DELETE",
        "/v1/projects/p-1",
        PROJECTS + "DeleteProject",
        {"project_id": "p-1"},
        response={},
    ),
    Case(
        "delete-with-body",
        "DELETE",
        "/v1/users/me",
        IDENTITY + "DeleteCurrentUser",
        {"password": "hunter22hunter"},
        json={"password": "hunter22hunter"},
    ),
    Case(
        "two-variables",
        "GET",
        "/v1/projects/p-1/edits/e-9",
        PROJECTS + "GetEdit",
        {"project_id": "p-1", "edit_id": "e-9"},
    ),
    Case(
        "literal-path-with-dot",
        "GET",
        "/.well-known/jwks.json",
        IDENTITY + "GetJwks",
        {},
        response={},
    ),
    # Custom verbs: the verb selects the method; an undeclared verb is part of the variable.
    Case(
        "custom-verb-undo",
        "POST",
        "/v1/projects/p-1:undo",
        PROJECTS + "Undo",
        {"project_id": "p-1"},
        json={},
    ),
    Case(
        "custom-verb-redo",
        "POST",
        "/v1/projects/p-1:redo",
        PROJECTS + "Redo",
        {"project_id": "p-1"},
        json={},
    ),
    Case(
        "custom-verb-no-body",
        "POST",
        "/v1/projects/p-1:reset",
        PROJECTS + "Reset",
        {"project_id": "p-1"},
    ),
    Case(
        "custom-verb-with-body",
        "POST",
        "/v1/projects/p-1:jump",
        PROJECTS + "Jump",
        {"project_id": "p-1", "edit_id": "e-3"},
        json={"editId": "e-3"},
    ),
    Case(
        "undeclared-verb-stays-in-variable",
        "GET",
        "/v1/assets/a-1:thumbnail",
        ASSETS + "GetAsset",
        {"asset_id": "a-1:thumbnail"},
    ),
    Case(
        "verb-on-literal",
        "POST",
        "/v1/auth:logIn",
        IDENTITY + "LogIn",
        {"login": "ann", "password": "pw"},
        json={"login": "ann", "password": "pw"},
    ),
    Case(
        "verb-after-literal-path",
        "POST",
        "/v1/users/me:changePassword",
        IDENTITY + "ChangePassword",
        {"current_password": "a", "new_password": "b"},
        json={"currentPassword": "a", "newPassword": "b"},
    ),
    # body: "field" puts the JSON body into that field; unknown JSON fields are ignored.
    Case(
        "body-field-project",
        "POST",
        "/v1/projects",
        PROJECTS + "CreateProject",
        {"project": {"name": "Trip", "original_asset_id": "a-1"}},
        json={"name": "Trip", "originalAssetId": "a-1", "noSuchField": {"x": 1}},
        response={"project": {"id": "p-new", "name": "Trip", "originalAssetId": "a-1"}},
    ),
    Case(
        "body-field-preset-with-enum-name",
        "POST",
        "/v1/presets",
        PRESETS + "CreatePreset",
        {
            "preset": {
                "name": "Warm",
                "prompt": "warm light",
                "category": "PRESET_CATEGORY_ADJUSTMENT",
            }
        },
        json={"name": "Warm", "prompt": "warm light", "category": "PRESET_CATEGORY_ADJUSTMENT"},
    ),
    Case(
        "body-field-accepts-proto-names",
        "POST",
        "/v1/projects",
        PROJECTS + "CreateProject",
        {"project": {"name": "Trip", "original_asset_id": "a-2"}},
        json={"name": "Trip", "original_asset_id": "a-2"},
    ),
    Case(
        "query-dotted-name-into-body-field",
        "POST",
        "/v1/projects?project.name=From%20query",
        PROJECTS + "CreateProject",
        {"project": {"name": "From query", "original_asset_id": "a-1"}},
        json={"originalAssetId": "a-1"},
    ),
    # body: "*" with oneofs, nested messages, enums by name and number.
    Case(
        "body-star-oneof-enum-name",
        "POST",
        "/v1/projects/p-1/edits",
        PROJECTS + "ApplyEdit",
        {
            "project_id": "p-1",
            "request_id": "r-1",
            "crop": {
                "x": 1,
                "y": 2,
                "width": 30,
                "height": 40,
                "aspect_ratio": "16:9",
            },
        },
        json={
            "requestId": "r-1",
            "crop": {"x": 1, "y": 2, "width": 30, "height": 40, "aspectRatio": "16:9"},
        },
    ),
    Case(
        "body-star-enum-number-and-repeated-messages",
        "POST",
        "/v1/projects/p-1/edits",
        PROJECTS + "ApplyEdit",
        {
            "project_id": "p-1",
            "request_id": "r-2",
            "retouch": {"prompt": "blue shirt", "hotspots": [{"x": 5, "y": 6}, {"x": 7}]},
        },
        json={
            "requestId": "r-2",
            "retouch": {"prompt": "blue shirt", "hotspots": [{"x": 5, "y": 6}, {"x": 7}]},
        },
    ),
    Case(
        "path-variable-wins-over-body",
        "POST",
        "/v1/projects/p-path:undo",
        PROJECTS + "Undo",
        {"project_id": "p-path"},
        json={"projectId": "p-body"},
    ),
    Case(
        "field-mask-from-json-string",
        "PATCH",
        "/v1/presets/s-1",
        PRESETS + "UpdatePreset",
        {
            "preset_id": "s-1",
            "name": "N",
            "update_mask": "name,prompt",
            "expected_version": 3,
            "visibility": "PRESET_VISIBILITY_PUBLIC",
        },
        json={"name": "N", "updateMask": "name,prompt", "expectedVersion": 3, "visibility": 3},
    ),
    Case(
        "optional-field-present-with-default",
        "PATCH",
        "/v1/users/me",
        IDENTITY + "UpdateCurrentUser",
        {"display_name": ""},
        json={"displayName": ""},
    ),
    # Query parameters: JSON or proto names, enums by name or number, repetition, '+' kept.
    Case(
        "query-strings-json-and-proto-names",
        "GET",
        "/v1/presets?category=filter&scope=community&orderBy=popular&query=blue+sky%21&page_size=3&pageToken=t",
        PRESETS + "ListPresets",
        {
            "category": "filter",
            "scope": "community",
            "order_by": "popular",
            "query": "blue+sky!",
            "page_size": 3,
            "page_token": "t",
        },
    ),
    Case(
        "query-enum-by-number",
        "GET",
        "/v1/assets?kind=2",
        ASSETS + "ListAssets",
        {"kind": "ASSET_KIND_EDIT_RESULT"},
    ),
    Case(
        "query-unknown-and-valueless-ignored",
        "GET",
        "/v1/assets?kind=ASSET_KIND_UPLOAD&utm_source=x&pageSize&=y",
        ASSETS + "ListAssets",
        {"kind": "ASSET_KIND_UPLOAD"},
    ),
    Case(
        "query-repeated-by-repetition",
        "POST",
        "/v1/projects/p-1:reapply?editIds=e-1&edit_ids=e-2&editIds=e-3",
        PROJECTS + "Reapply",
        {"project_id": "p-1", "request_id": "r", "edit_ids": ["e-1", "e-2", "e-3"]},
        json={"requestId": "r"},
    ),
    Case(
        "query-on-get-with-variable",
        "GET",
        "/v1/assets/a-1:downloadUrl?variant=thumbnail",
        ASSETS + "GetDownloadUrl",
        {"asset_id": "a-1", "variant": "thumbnail"},
    ),
    # Responses: int64 as strings, enums as names, Struct as JSON, defaults omitted.
    Case(
        "response-int64-struct-defaults",
        "GET",
        "/v1/tiers",
        IDENTITY + "ListTiers",
        {},
        response={
            "tiers": [
                {
                    "code": "free",
                    "name": "Free",
                    "limits": {"aiEditsPerMonth": "50", "storageBytes": str(5 * 2**30)},
                    "features": {"public_presets": False, "actions": ["crop", "filter"]},
                }
            ]
        },
    ),
    Case(
        "response-int32-number",
        "POST",
        "/v1/auth:signUp",
        IDENTITY + "SignUp",
        {"email": "ann@example.com", "username": "ann", "password": "correct horse"},
        json={"email": "ann@example.com", "username": "ann", "password": "correct horse"},
        response={
            "user": {"id": "u-1", "email": "ann@example.com", "username": "ann", "tier": "free"},
            "accessToken": "access",
            "refreshToken": "refresh",
            "expiresIn": 900,
        },
    ),
    Case(
        "empty-response",
        "POST",
        "/v1/billing:portal",
        BILLING + "CreatePortalSession",
        {"return_url": "https://x.test/"},
        json={"returnUrl": "https://x.test/"},
        response={},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_http_request_becomes_grpc_request(
    client: httpx.AsyncClient, recorder: Recorder, case: Case
) -> None:
    response = await client.request(case.method, case.url, json=case.json)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    received = recorder.last()
    assert received.path == case.grpc
    assert (
        json_format.MessageToDict(received.request, preserving_proto_field_name=True)
        == case.request
    )
    if case.response is not None:
        assert response.json() == case.response


def _example_path(route: Route) -> str:
    """A concrete path a template matches: variables and wildcards filled in."""
    parts = [
        "x-1" if s in (SINGLE_WILDCARD, MULTI_WILDCARD) else s for s in route.template.segments
    ]
    return "/" + "/".join(parts) + (f":{route.template.verb}" if route.template.verb else "")


PUBLIC_ROUTES = RouteTable.from_descriptor_set(DescriptorSet.load(DEFAULT_DESCRIPTOR_SET)).routes


@pytest.mark.parametrize("route", PUBLIC_ROUTES, ids=[r.method.full_name for r in PUBLIC_ROUTES])
async def test_every_public_route_reaches_its_method(
    client: httpx.AsyncClient, recorder: Recorder, route: Route
) -> None:
    body: dict[str, Any] = {}
    if route.request.body_mode is BodyMode.JSON:
        body["json"] = {}
    elif route.request.body_mode is BodyMode.RAW:
        body["content"] = b"raw"
    response = await client.request(route.http_method, _example_path(route), **body)

    assert response.status_code == 200, response.text
    assert recorder.last().path == route.method.grpc_path


async def test_upload_puts_raw_bytes_and_content_type_into_http_body(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    image = bytes(range(256)) * 40  # not UTF-8, not JSON: must arrive byte for byte
    response = await client.post(
        "/v1/assets:upload?filename=cat%20photo.jpg",
        content=image,
        headers={"Content-Type": "image/jpeg"},
    )

    assert response.status_code == 200, response.text
    request = recorder.last().request
    assert request.content.data == image
    assert request.content.content_type == "image/jpeg"
    assert request.filename == "cat photo.jpg"
    assert response.json()["asset"] == {
        "id": "a-new",
        "mimeType": "image/jpeg",
        "sizeBytes": str(len(image)),
        "filename": "cat photo.jpg",
        "kind": "ASSET_KIND_UPLOAD",
    }


@pytest.mark.parametrize(
    ("query", "expected"), [("", PNG_BYTES), ("?variant=thumbnail", THUMBNAIL_BYTES)]
)
async def test_download_answers_raw_bytes_content_type_and_forwarded_headers(
    client: httpx.AsyncClient, query: str, expected: bytes
) -> None:
    response = await client.get(f"/v1/assets/a-1:content{query}")

    assert response.status_code == 200
    assert response.content == expected
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="cat.png"'
    assert response.headers["cache-control"] == "private, max-age=60"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert not [h for h in response.headers if h.startswith("grpc-") or h.endswith("-bin")]


async def test_webhook_passes_raw_body_and_stripe_signature(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    # Stripe signs the exact bytes: spacing and key order must survive untouched.
    payload = b'{"id": "evt_1",  "type":"invoice.paid", "data": {"object": {}}}'
    response = await client.post(
        "/v1/billing/stripe:webhook",
        content=payload,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": "t=1,v1=abc",
        },
    )

    assert response.status_code == 200
    assert response.json() == {"processed": True}
    received = recorder.last()
    assert received.request.data == payload
    assert received.request.content_type == "application/json; charset=utf-8"
    assert received.metadata["stripe-signature"] == "t=1,v1=abc"


async def test_headers_are_forwarded_as_metadata(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.get(
        "/v1/users/me",
        headers={
            "Authorization": "Bearer token-1",
            "X-Request-Id": "req-42",
            "User-Agent": "pixelshop-web/1.0",
            "X-Forwarded-For": "203.0.113.9",
            "Cookie": "session=secret",
        },
    )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    metadata = recorder.last().metadata
    assert metadata["authorization"] == "Bearer token-1"
    assert metadata["x-request-id"] == "req-42"
    assert metadata["x-forwarded-user-agent"] == "pixelshop-web/1.0"
    assert metadata["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert "cookie" not in metadata


async def test_request_id_is_generated_when_absent(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.get("/v1/tiers")

    request_id = response.headers["x-request-id"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", request_id
    )
    assert recorder.last().metadata["x-request-id"] == request_id
    assert recorder.last().metadata["x-forwarded-for"] == "127.0.0.1"


async def test_error_responses_carry_the_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here", headers={"X-Request-Id": "req-404"})

    assert response.headers["x-request-id"] == "req-404"
