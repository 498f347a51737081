"""Fake Pixelshop upstreams for the gateway tests: a real grpc.aio server on port 0 serving
every unary method of the five services (public and internal) from the generated code.

Each call is recorded (method, request message, metadata) so that tests can assert exactly what
the gateway built. Most methods answer an empty response; a few answer something richer, and
GetProject fails on demand: project id `fail-<CODE>` aborts with a google.rpc.Status carrying
an ErrorInfo (and a RetryInfo for RESOURCE_EXHAUSTED), `plain-<CODE>` aborts with only a
message, `hang` never answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import message_factory
from google.rpc import error_details_pb2, status_pb2
from pixelshop.assets.v1 import assets_pb2
from pixelshop.billing.v1 import billing_pb2
from pixelshop.identity.v1 import identity_pb2
from pixelshop.presets.v1 import presets_pb2
from pixelshop.projects.v1 import projects_pb2

PROTO_MODULES = (identity_pb2, projects_pb2, assets_pb2, presets_pb2, billing_pb2)
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
THUMBNAIL_BYTES = b"\x89PNG\r\n\x1a\nthumb"
BIG_VERSION = 2**40 + 7  # an int64 above 2^32: must come out as a JSON string

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclasses.dataclass
class Received:
    path: str  # "/pixelshop.projects.v1.ProjectService/GetProject"
    request: Any
    metadata: dict[str, str]
    # Seconds left of the call's deadline when it arrived (None: no deadline).
    time_remaining: float | None = None


@dataclasses.dataclass
class Recorder:
    calls: list[Received] = dataclasses.field(default_factory=list)

    def last(self) -> Received:
        assert self.calls, "the upstream received no call"
        return self.calls[-1]


async def _get_project(request: Any, context: grpc.aio.ServicerContext) -> Any:
    project_id = request.project_id
    if project_id == "hang":
        await asyncio.Event().wait()  # until the gateway's deadline cancels the call
    kind, _, code_name = project_id.partition("-")
    if kind in ("fail", "plain") and code_name in grpc.StatusCode.__members__:
        code = grpc.StatusCode[code_name]
        if kind == "plain":
            await context.abort(code, f"plain {code_name}")
        status = status_pb2.Status(code=code.value[0], message=f"fake {code_name}")
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason=f"FAKE_{code_name}", domain="fake.pixelshop", metadata={"id": project_id}
            )
        )
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(1200)
            status.details.add().Pack(retry)
        await context.abort(
            code,
            status.message,
            trailing_metadata=(
                ("grpc-status-details-bin", status.SerializeToString()),
                ("x-fake-reason", code_name.lower()),
            ),
        )
    project = projects_pb2.Project(
        id=project_id, name="Holiday", original_asset_id="a-1", version=BIG_VERSION, can_undo=True
    )
    project.create_time.FromSeconds(1_700_000_000)
    return projects_pb2.GetProjectResponse(project=project)


async def _create_project(request: Any, context: grpc.aio.ServicerContext) -> Any:
    project = projects_pb2.Project()
    project.CopyFrom(request.project)
    project.id = "p-new"
    return projects_pb2.CreateProjectResponse(project=project)


async def _upload_asset(request: Any, context: grpc.aio.ServicerContext) -> Any:
    asset = assets_pb2.Asset(
        id="a-new",
        mime_type=request.content.content_type,
        size_bytes=len(request.content.data),
        filename=request.filename,
        kind=assets_pb2.ASSET_KIND_UPLOAD,
    )
    return assets_pb2.UploadAssetResponse(asset=asset)


async def _get_asset_content(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.send_initial_metadata(
        (
            ("content-disposition", 'inline; filename="cat.png"'),
            ("cache-control", "private, max-age=60"),
            ("x-content-type-options", "nosniff"),
            ("x-fake-trace-bin", b"\x00\x01"),  # binary metadata is not an HTTP header
        )
    )
    data = THUMBNAIL_BYTES if request.variant == "thumbnail" else PNG_BYTES
    return httpbody_pb2.HttpBody(content_type="image/png", data=data)


async def _handle_webhook(request: Any, context: grpc.aio.ServicerContext) -> Any:
    return billing_pb2.HandleStripeWebhookResponse(processed=True)


async def _list_tiers(request: Any, context: grpc.aio.ServicerContext) -> Any:
    tier = identity_pb2.Tier(code="free", name="Free", purchasable=False)
    tier.limits.ai_edits_per_month = 50
    tier.limits.storage_bytes = 5 * 2**30
    tier.features.update({"public_presets": False, "actions": ["crop", "filter"]})
    return identity_pb2.ListTiersResponse(tiers=[tier])


async def _sign_up(request: Any, context: grpc.aio.ServicerContext) -> Any:
    user = identity_pb2.User(id="u-1", email=request.email, username=request.username, tier="free")
    return identity_pb2.SignUpResponse(
        user=user, access_token="access", refresh_token="refresh", expires_in=900
    )


BEHAVIORS: dict[str, Behavior] = {
    "/pixelshop.projects.v1.ProjectService/GetProject": _get_project,
    "/pixelshop.projects.v1.ProjectService/CreateProject": _create_project,
    "/pixelshop.assets.v1.AssetService/UploadAsset": _upload_asset,
    "/pixelshop.assets.v1.AssetService/GetAssetContent": _get_asset_content,
    "/pixelshop.billing.v1.BillingService/HandleStripeWebhook": _handle_webhook,
    "/pixelshop.identity.v1.IdentityService/ListTiers": _list_tiers,
    "/pixelshop.identity.v1.IdentityService/SignUp": _sign_up,
}


def _handler(recorder: Recorder, path: str, method: Any) -> grpc.RpcMethodHandler:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behavior = BEHAVIORS.get(path)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        recorder.calls.append(Received(path, request, metadata, context.time_remaining()))
        if behavior is not None:
            return await behavior(request, context)
        return response_class()

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


async def start_fake_upstream(recorder: Recorder, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Every unary method of every Pixelshop service, on one port (all upstreams point here);
    a fixed `port` lets a gateway started outside the tests (GATEWAY_URL) reach it."""
    server = grpc.aio.server()
    for module in PROTO_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            handlers = {
                method.name: _handler(recorder, f"/{service.full_name}/{method.name}", method)
                for method in service.methods
                if not (method.client_streaming or method.server_streaming)
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.full_name, handlers),)
            )
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port
