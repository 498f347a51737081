"""Fixtures of the assets tests: a FakeIdentity, moto's S3 server, and assets servers.

Behaviour tests take `settings`, which is parametrized over both storage backends (a
temporary directory, and a fresh bucket on moto's threaded server driven by real boto3),
so every such test runs against each. Servers run in process on port 0 and are called
over a real grpc.aio channel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import boto3
import grpc
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from pixelshop.assets.v1 import assets_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.server import RunningServer
from services.assets.server import AssetsComponents, build, start
from services.assets.settings import AssetsSettings
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import INTERNAL_SECRET, service_settings

Metadata = tuple[tuple[str, str], ...]
S3_REGION = "us-east-1"
# moto accepts any credentials; boto3 must find some in its standard chain.
FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@pytest.fixture(scope="session")
async def identity() -> AsyncIterator[FakeIdentity]:
    fake = await FakeIdentity().start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENVIRONMENT.items():
            patch.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_client(endpoint: str) -> Any:
    """A test's own boto3 client, to look at the bucket behind the service's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(params=["directory", "s3"])
def settings(
    request: pytest.FixtureRequest, migrated_db: str, identity: FakeIdentity, tmp_path: Any
) -> AssetsSettings:
    overrides: dict[str, Any] = {
        "identity_addr": identity.address,
        # Tests run the sweeper themselves, with a clock they choose.
        "sweep_interval_seconds": 0,
        # No billing service here: tests that count storage pass a quota of their own.
        "quota": "unlimited",
    }
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        bucket = f"assets-{uuid.uuid4().hex[:16]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        overrides |= {
            "storage_backend": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": endpoint,
            "s3_region": S3_REGION,
            "s3_path_style": True,
        }
    else:
        overrides["storage_dir"] = str(tmp_path / "objects")
    return service_settings(AssetsSettings, migrated_db, **overrides)


@pytest.fixture
def directory_settings(migrated_db: str, identity: FakeIdentity, tmp_path: Any) -> AssetsSettings:
    """Directory only, for what only the directory backend answers."""
    return service_settings(
        AssetsSettings,
        migrated_db,
        identity_addr=identity.address,
        sweep_interval_seconds=0,
        quota="unlimited",
        storage_dir=str(tmp_path / "objects"),
    )


@pytest.fixture
def s3_settings(migrated_db: str, identity: FakeIdentity, moto_endpoint: str) -> AssetsSettings:
    """S3 only, for what only S3 can do (presigned URLs)."""
    bucket = f"assets-{uuid.uuid4().hex[:16]}"
    s3_client(moto_endpoint).create_bucket(Bucket=bucket)
    return service_settings(
        AssetsSettings,
        migrated_db,
        identity_addr=identity.address,
        sweep_interval_seconds=0,
        quota="unlimited",
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        s3_region=S3_REGION,
        s3_path_style=True,
    )


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Starts assets servers (settings, store and quota of the test's choosing) and
    stops them all afterwards."""
    running: list[RunningServer] = []

    async def starter(settings: AssetsSettings, **options: Any) -> RunningServer:
        server = await start(settings, port=0, **options)
        running.append(server)
        return server

    yield starter
    for server in running:
        await server.stop(0)


@pytest.fixture
async def server(settings: AssetsSettings, start_server: StartServer) -> RunningServer:
    return await start_server(settings)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def assets(channel: grpc.aio.Channel) -> assets_pb2_grpc.AssetServiceStub:
    return assets_pb2_grpc.AssetServiceStub(channel)


@pytest.fixture
def internal(channel: grpc.aio.Channel) -> assets_pb2_grpc.AssetInternalServiceStub:
    return assets_pb2_grpc.AssetInternalServiceStub(channel)


@pytest.fixture
async def components(settings: AssetsSettings) -> AsyncIterator[AssetsComponents]:
    """A second set of the service's parts on the same database and store, for looking
    at rows and objects directly and for running the sweeper."""
    built = build(settings)
    yield built
    await built.close()


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def new_user(identity: FakeIdentity) -> Callable[..., tuple[uuid.UUID, Metadata]]:
    def make(tier: str = "free") -> tuple[uuid.UUID, Metadata]:
        user_id, token = identity.new_user(tier)
        return user_id, bearer(token)

    return make


@pytest.fixture
def service_credential() -> Metadata:
    """What another Pixelshop service (projects) sends to internal RPCs (a fresh token:
    they live five minutes)."""
    return ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "projects").token()),)
