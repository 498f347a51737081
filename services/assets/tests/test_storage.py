"""The storage interface behaves the same on both backends; each backend's own promises."""

from __future__ import annotations

import datetime
import pathlib
import urllib.parse
import uuid

import pytest

from runtime.errors import FailedPrecondition
from services.assets.errors import ObjectMissing
from services.assets.settings import AssetsSettings
from services.assets.storage import DirectoryStore, ObjectStore, S3Store, build_store
from services.assets.tests.conftest import s3_client


@pytest.fixture
def store(settings: AssetsSettings) -> ObjectStore:
    return build_store(settings)


def key(name: str = "original") -> str:
    return f"users/{uuid.uuid4()}/{uuid.uuid4()}/{name}"


async def test_put_get_stream_head_and_delete(store: ObjectStore) -> None:
    path = key()
    data = bytes(range(256)) * 10_000  # 2.5 MB: several stream chunks

    assert await store.head(path) is None
    assert not await store.exists(path)
    await store.put(path, data, "image/png")

    assert await store.get(path) == data
    chunks = [chunk async for chunk in store.stream(path, chunk_size=1024 * 1024)]
    assert len(chunks) == 3
    assert b"".join(chunks) == data
    stored = await store.head(path)
    assert stored is not None
    assert stored.size_bytes == len(data)
    assert abs(stored.last_modified - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(
        minutes=5
    )
    assert await store.exists(path)

    await store.put(path, b"replaced", "image/png")  # overwriting is allowed
    assert await store.get(path) == b"replaced"

    await store.delete(path)
    await store.delete(path)  # idempotent
    assert not await store.exists(path)
    with pytest.raises(ObjectMissing):
        await store.get(path)
    with pytest.raises(ObjectMissing):
        async for _ in store.stream(path):
            pass


async def test_listing_is_in_key_order_with_prefix_cursor_and_limit(store: ObjectStore) -> None:
    owner = uuid.uuid4()
    keys = sorted(f"users/{owner}/{uuid.uuid4()}/{name}" for name in ("original", "thumbnail") * 3)
    for path in keys:
        await store.put(path, b"x", "image/jpeg")
    await store.put(f"users/{uuid.uuid4()}/other/original", b"x", "image/jpeg")

    listed = await store.list_objects(f"users/{owner}/")
    assert [o.key for o in listed] == keys

    first = await store.list_objects(f"users/{owner}/", limit=4)
    rest = await store.list_objects(f"users/{owner}/", start_after=first[-1].key, limit=4)
    assert [o.key for o in first + rest] == keys
    assert await store.list_objects(f"users/{uuid.uuid4()}/") == []


async def test_directory_writes_are_atomic_and_leave_no_temporary_files(
    tmp_path: pathlib.Path,
) -> None:
    store = DirectoryStore(tmp_path)
    path = key()
    await store.put(path, b"first", "image/jpeg")
    await store.put(path, b"second", "image/jpeg")
    folder = (tmp_path / path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["original"]
    assert (tmp_path / path).read_bytes() == b"second"

    await store.delete(path)
    assert not folder.exists()  # the asset's folder goes with its last object


@pytest.mark.parametrize(
    "bad_key",
    ["../outside", "users/../../etc/passwd", "/absolute", "users//double", "users/./x", "a/b/.."],
)
async def test_the_directory_backend_never_leaves_its_root(
    tmp_path: pathlib.Path, bad_key: str
) -> None:
    store = DirectoryStore(tmp_path / "root")
    with pytest.raises(ValueError, match="not a storage key"):
        await store.put(bad_key, b"x", "image/jpeg")


async def test_the_directory_backend_has_no_presigned_urls(tmp_path: pathlib.Path) -> None:
    store = DirectoryStore(tmp_path)
    assert not store.supports_presigned_urls
    with pytest.raises(FailedPrecondition, match="direct upload needs the s3 storage backend"):
        await store.presigned_put(key(), content_type="image/png", size_bytes=1, expires_in=60)
    with pytest.raises(FailedPrecondition, match="download URLs need the s3 storage backend"):
        await store.presigned_get(
            key(), expires_in=60, content_type="image/png", content_disposition="inline"
        )


async def test_presigned_urls_are_scoped_and_expire_when_configured(
    s3_settings: AssetsSettings,
) -> None:
    issued = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
    client = s3_client(s3_settings.s3_endpoint_url)
    store = S3Store(client, s3_settings.s3_bucket, clock=lambda: issued)
    path = key()

    upload = await store.presigned_put(
        path, content_type="image/webp", size_bytes=1234, expires_in=600
    )
    download = await store.presigned_get(
        path, expires_in=60, content_type="image/webp", content_disposition='inline; filename="a"'
    )

    assert upload.method == "PUT"
    assert download.method == "GET"
    assert upload.expires_at == issued + datetime.timedelta(seconds=600)
    assert download.expires_at == issued + datetime.timedelta(seconds=60)
    assert upload.headers == {"Content-Type": "image/webp"}
    put_url = urllib.parse.urlsplit(upload.url)
    put_query = urllib.parse.parse_qs(put_url.query)
    assert put_url.path == f"/{s3_settings.s3_bucket}/{path}"
    assert put_query["X-Amz-Expires"] == ["600"]
    assert put_query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    # No checksum parameters some S3-compatible stores reject.
    assert not [name for name in put_query if "checksum" in name.lower()]
    get_query = urllib.parse.parse_qs(urllib.parse.urlsplit(download.url).query)
    assert get_query["X-Amz-Expires"] == ["60"]
    assert get_query["response-content-type"] == ["image/webp"]
    assert get_query["response-content-disposition"] == ['inline; filename="a"']


@pytest.mark.parametrize("bad_key", ["users/x\n", "users/\nx/original", "users/x\r/original"])
async def test_the_directory_backend_refuses_line_breaks_in_keys(
    tmp_path: pathlib.Path, bad_key: str
) -> None:
    store = DirectoryStore(tmp_path / "root")
    with pytest.raises(ValueError, match="not a storage key"):
        await store.put(bad_key, b"x", "image/jpeg")
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("bad_prefix", ["../", "../outside/", "users/../../", "/etc/"])
async def test_the_directory_backend_never_lists_outside_its_root(
    tmp_path: pathlib.Path, bad_prefix: str
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"x")
    store = DirectoryStore(tmp_path / "root")
    await store.put(key(), b"x", "image/jpeg")
    with pytest.raises(ValueError, match="not a storage key"):
        await store.list_objects(bad_prefix)


async def test_a_store_call_inside_a_transaction_is_refused(
    store: ObjectStore, settings: AssetsSettings
) -> None:
    # ADR 0011: no remote call while a transaction (and a pooled connection) is open. The
    # directory backend stands for a remote store here, so either backend's tests catch it.
    from runtime.db import Database, RemoteCallInTransaction

    database = Database.connect(settings.database_url.reveal(), "assets")
    try:
        async with database.transaction():
            with pytest.raises(RemoteCallInTransaction, match="transaction is open"):
                await store.put(key(), b"x", "image/jpeg")
            with pytest.raises(RemoteCallInTransaction):
                await store.list_objects("users/")
        await store.put(key(), b"x", "image/jpeg")  # fine once it is committed
    finally:
        await database.close()
