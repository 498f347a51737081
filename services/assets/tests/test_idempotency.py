"""`POST /v1/assets:upload` with an `Idempotency-Key` (metadata `idempotency-key`): a retry
stores and charges once, other bytes under the key are refused, keys are per user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from runtime.errors import InvalidArgument
from services.assets.api import idempotency_key_header
from services.assets.models import owner_prefix
from services.assets.server import AssetsComponents
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.conftest import Metadata, StartServer
from services.assets.tests.fakes import RecordingQuota
from services.assets.tests.test_internal_api import store_requests
from services.assets.tests.test_upload import field_violation, upload

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


def keyed(auth: Metadata, key: str) -> Metadata:
    return (*auth, ("idempotency-key", key))


@pytest.fixture
def quota() -> RecordingQuota:
    return RecordingQuota()


@pytest.fixture
async def stub(
    settings: AssetsSettings, start_server: StartServer, quota: RecordingQuota
) -> assets_pb2_grpc.AssetServiceStub:
    server = await start_server(settings, quota=quota)
    return assets_pb2_grpc.AssetServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))


async def test_the_same_key_and_bytes_give_one_asset_one_charge_one_object(
    stub: assets_pb2_grpc.AssetServiceStub,
    quota: RecordingQuota,
    components: AssetsComponents,
    new_user: NewUser,
) -> None:
    owner_id, auth = new_user()
    data = images.jpeg(320, 240)

    first = await upload(stub, keyed(auth, "browser-retry-1"), data)
    again = await upload(stub, keyed(auth, "browser-retry-1"), data)

    assert again == first
    assert len(quota.reserved) == 1
    assert len(set(quota.committed)) == 1
    assert len(await components.store.list_objects(owner_prefix(owner_id))) == 2
    listed = await stub.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert [a.id for a in listed.assets] == [first.id]
    # Without a key, the same bytes are simply another upload.
    other = await upload(stub, auth, data)
    assert other.id != first.id


async def test_the_same_key_with_other_bytes_is_a_409(
    stub: assets_pb2_grpc.AssetServiceStub, quota: RecordingQuota, new_user: NewUser
) -> None:
    _, auth = new_user()
    first = await upload(stub, keyed(auth, "k-42"), images.jpeg(64, 64))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stub, keyed(auth, "k-42"), images.png(64, 64))

    # ALREADY_EXISTS is 409 Conflict at the gateway and in Envoy.
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert raised.value.details() == (
        "this Idempotency-Key was already used for a different image; "
        "send a new key with new content"
    )
    assert len(quota.reserved) == 1
    listed = await stub.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert [a.id for a in listed.assets] == [first.id]


async def test_keys_are_per_user(stub: assets_pb2_grpc.AssetServiceStub, new_user: NewUser) -> None:
    _, alice = new_user()
    _, bob = new_user()
    data = images.jpeg(64, 64)
    mine = await upload(stub, keyed(alice, "same-key"), data)
    theirs = await upload(stub, keyed(bob, "same-key"), data)
    assert mine.id != theirs.id
    # Bob's key does not reach Alice's asset either way.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetAsset(assets_pb2.GetAssetRequest(asset_id=mine.id), metadata=bob)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_duplicates_resolve_to_one_asset(
    stub: assets_pb2_grpc.AssetServiceStub,
    quota: RecordingQuota,
    components: AssetsComponents,
    new_user: NewUser,
) -> None:
    owner_id, auth = new_user()
    data = images.png(400, 300)

    stored = await asyncio.gather(
        *(upload(stub, keyed(auth, "double-click"), data) for _ in range(6))
    )

    assert len({asset.id for asset in stored}) == 1
    assert len(quota.reserved) == 1
    assert len(set(quota.committed)) == 1
    assert quota.released == []
    assert len(await components.store.list_objects(owner_prefix(owner_id))) == 2


async def test_an_upload_key_and_a_store_asset_key_never_meet(
    stub: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    service_credential: Metadata,
    new_user: NewUser,
) -> None:
    # A user cannot make another service's StoreAsset answer their upload by guessing
    # its key: the two are kept apart.
    owner_id, auth = new_user()
    data = images.jpeg(64, 64)
    uploaded = await upload(stub, keyed(auth, "edit:1"), data)
    stored = await internal.StoreAsset(
        store_requests(owner_id, data, idempotency_key="edit:1"), metadata=service_credential
    )
    assert stored.asset.id != uploaded.id


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((("idempotency-key", ""),), "Idempotency-Key: must be 1-255 printable ASCII characters"),
        (
            (("idempotency-key", "k" * 256),),
            "Idempotency-Key: must be 1-255 printable ASCII characters",
        ),
        (
            (("idempotency-key", "a"), ("idempotency-key", "b")),
            "Idempotency-Key: must be sent once",
        ),
    ],
    ids=["empty", "too-long", "twice"],
)
async def test_a_bad_key_is_an_invalid_argument_naming_the_header(
    stub: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    metadata: Metadata,
    message: str,
) -> None:
    _, auth = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stub, (*auth, *metadata), images.jpeg(32, 32))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == message
    assert field_violation(raised.value) == "Idempotency-Key"


class _Context:
    def __init__(self, *metadata: tuple[str, Any]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata


@pytest.mark.parametrize("value", ["tab\there", "bell\x07", "caf\u00e9", b"bytes", "del\x7f"])
def test_only_printable_ascii_makes_a_key(value: Any) -> None:
    with pytest.raises(InvalidArgument) as raised:
        idempotency_key_header(_Context(("idempotency-key", value)))  # type: ignore[arg-type]
    assert raised.value.message.startswith("Idempotency-Key: must ")


def test_a_printable_key_of_255_characters_is_taken_as_it_is() -> None:
    key = "~ !" + "x" * 252
    assert idempotency_key_header(_Context(("idempotency-key", key))) == key  # type: ignore[arg-type]
    assert idempotency_key_header(_Context(("other", "x"))) is None  # type: ignore[arg-type]
