"""Object storage behind one interface: a local directory (embedded default) or S3.

Which one runs is configuration only (`PIXELSHOP_ASSETS_STORAGE_BACKEND`). Keys are
made by models.object_key from ids, never from user input; the directory backend still
refuses any key that could leave its root. Both backends do their blocking work (file
system calls, boto3, which is synchronous) in worker threads, so the event loop never
waits on storage. Backend failures become StorageUnavailable (retryable); a missing
object is ObjectMissing, which callers decide about. Every call goes through
`runtime.db.refuse_remote_call` first: a store call made while a transaction is open is a
programming error and raises (ADR 0011), for the directory backend too, so the tests of
either backend catch one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import pathlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.clock import Clock, utc_now
from runtime.db import refuse_remote_call
from runtime.errors import FailedPrecondition
from services.assets.errors import ObjectMissing, StorageUnavailable
from services.assets.settings import AssetsSettings

log = logging.getLogger("pixelshop.assets.storage")

READ_CHUNK_BYTES = 1024 * 1024
LIST_PAGE_MAX = 1000  # S3's own maximum per ListObjectsV2 call
DIRECT_UPLOAD_NEEDS_S3 = "direct upload needs the s3 storage backend"
DOWNLOAD_URL_NEEDS_S3 = "download URLs need the s3 storage backend"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    last_modified: datetime.datetime


@dataclass(frozen=True)
class PresignedRequest:
    """A request a client may make directly against the store until `expires_at`."""

    url: str
    method: str
    expires_at: datetime.datetime
    # Headers the request must carry exactly as given (they are part of the signature).
    headers: Mapping[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    @property
    def supports_presigned_urls(self) -> bool: ...

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]: ...

    async def head(self, key: str) -> StoredObject | None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Removes the object; a missing one is not an error."""

    async def list_objects(
        self, prefix: str, *, start_after: str = "", limit: int = LIST_PAGE_MAX
    ) -> list[StoredObject]:
        """Up to `limit` objects under `prefix` with keys after `start_after`, in key order."""

    async def presigned_put(
        self, key: str, *, content_type: str, size_bytes: int, expires_in: int
    ) -> PresignedRequest:
        """A PUT limited to this key, this content type and exactly this many bytes."""

    async def presigned_get(
        self, key: str, *, expires_in: int, content_type: str, content_disposition: str
    ) -> PresignedRequest: ...


# One path segment: no separators, never "." or "..", nothing a shell or a URL would
# mangle. A leading dot is allowed for the backend's own temporary files.
_SEGMENT = re.compile(r"^\.?[A-Za-z0-9_-][A-Za-z0-9._-]*$")


class DirectoryStore:
    """Objects as files under `root`; writes are atomic (temporary file, fsync, rename)."""

    supports_presigned_urls = False

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> pathlib.Path:
        segments = key.split("/")
        if not all(_SEGMENT.fullmatch(segment) for segment in segments):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root.joinpath(*segments)

    def _key(self, path: pathlib.Path) -> str:
        return path.relative_to(self.root).as_posix()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A hidden sibling: the rename is atomic on one file system, and a reader never
            # sees half a file. A crash leaves the temporary file for the orphan sweep.
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
            try:
                with open(temporary, "xb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise

        await self._run(write)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self._run(path.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    async def stream(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file = await self._run(open, path, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            while chunk := await self._run(file.read, chunk_size):
                yield chunk
        finally:
            file.close()

    async def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            stat = await self._run(path.stat)
        except FileNotFoundError:
            return None
        return StoredObject(key, stat.st_size, _from_timestamp(stat.st_mtime))

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            # An asset's folder holds only that asset's objects: drop it once empty so the
            # tree does not fill with empty folders. Never above it (other assets' uploads
            # may be creating the owner folder right now).
            if path.parent != self.root:
                with contextlib.suppress(OSError):  # not empty: another object remains
                    path.parent.rmdir()

        await self._run(remove)

    async def list_objects(
        self, prefix: str, *, start_after: str = "", limit: int = LIST_PAGE_MAX
    ) -> list[StoredObject]:
        def scan() -> list[StoredObject]:
            # Walk only the folder the prefix names; keys then filter on the full prefix.
            folder = self._path(prefix.rpartition("/")[0]) if "/" in prefix else self.root
            if not folder.is_dir():
                return []
            found = []
            for directory, _, files in os.walk(folder):
                for name in files:
                    path = pathlib.Path(directory, name)
                    key = self._key(path)
                    if key.startswith(prefix) and key > start_after:
                        found.append(path)
            found.sort(key=self._key)
            result = []
            for path in found[:limit]:
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while we looked
                    continue
                modified = _from_timestamp(stat.st_mtime)
                result.append(StoredObject(self._key(path), stat.st_size, modified))
            return result

        return await self._run(scan)

    async def presigned_put(
        self, key: str, *, content_type: str, size_bytes: int, expires_in: int
    ) -> PresignedRequest:
        raise FailedPrecondition(DIRECT_UPLOAD_NEEDS_S3)

    async def presigned_get(
        self, key: str, *, expires_in: int, content_type: str, content_disposition: str
    ) -> PresignedRequest:
        raise FailedPrecondition(DOWNLOAD_URL_NEEDS_S3)

    @staticmethod
    async def _run(function: Callable[..., Any], *args: Any) -> Any:
        # A local disk stands for a remote store here: the same rule, so the tests of the
        # directory backend catch a store call inside a transaction too.
        refuse_remote_call("the object store")
        try:
            return await asyncio.to_thread(function, *args)
        except FileNotFoundError:
            raise
        except OSError as error:
            log.error("directory storage failed", exc_info=error)
            raise StorageUnavailable() from error


def _from_timestamp(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class S3Store:
    """Objects in one S3 (or S3-compatible) bucket, through boto3 in worker threads."""

    supports_presigned_urls = True

    def __init__(self, client: Any, bucket: str, *, clock: Clock = utc_now) -> None:
        self._client = client
        self._bucket = bucket
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: AssetsSettings) -> S3Store:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            # boto3 >= 1.36 adds CRC checksums to every upload (and to presigned URLs),
            # which many S3-compatible stores reject; send them only where S3 demands.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # The credentials come from boto3's standard chain (environment, profile, role).
        client = boto3.session.Session().client(
            "s3",
            region_name=settings.s3_region or None,
            endpoint_url=settings.s3_endpoint_url or None,
            config=config,
        )
        return cls(client, settings.s3_bucket)

    async def _call(self, operation: str, **params: Any) -> Any:
        refuse_remote_call(f"S3 {operation}")
        method = getattr(self._client, operation)
        try:
            return await asyncio.to_thread(method, Bucket=self._bucket, **params)
        except Exception as error:
            if _is_missing(error):
                raise ObjectMissing(str(params.get("Key", ""))) from error
            log.error("s3 %s failed", operation, exc_info=error)
            raise StorageUnavailable() from error

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call("put_object", Key=key, Body=data, ContentType=content_type)

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", Key=key)
        body = response["Body"]
        try:
            return await self._read(body.read)
        finally:
            body.close()

    async def stream(self, key: str, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        response = await self._call("get_object", Key=key)
        body = response["Body"]
        try:
            while chunk := await self._read(body.read, chunk_size):
                yield chunk
        finally:
            body.close()

    @staticmethod
    async def _read(read: Callable[..., bytes], *args: Any) -> bytes:
        refuse_remote_call("an S3 read")
        try:
            return await asyncio.to_thread(read, *args)
        except Exception as error:
            log.error("s3 read failed", exc_info=error)
            raise StorageUnavailable() from error

    async def head(self, key: str) -> StoredObject | None:
        try:
            response = await self._call("head_object", Key=key)
        except ObjectMissing:
            return None
        return StoredObject(key, int(response["ContentLength"]), response["LastModified"])

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def delete(self, key: str) -> None:
        # S3 answers success for a missing key: deleting stays idempotent.
        await self._call("delete_object", Key=key)

    async def list_objects(
        self, prefix: str, *, start_after: str = "", limit: int = LIST_PAGE_MAX
    ) -> list[StoredObject]:
        found: list[StoredObject] = []
        params: dict[str, Any] = {"Prefix": prefix}
        if start_after:
            params["StartAfter"] = start_after
        while len(found) < limit:
            page = await self._call(
                "list_objects_v2", MaxKeys=min(LIST_PAGE_MAX, limit - len(found)), **params
            )
            found += [
                StoredObject(item["Key"], int(item["Size"]), item["LastModified"])
                for item in page.get("Contents", [])
            ]
            if not page.get("IsTruncated"):
                break
            params = {"Prefix": prefix, "ContinuationToken": page["NextContinuationToken"]}
        return found[:limit]

    async def _presign(self, operation: str, params: dict[str, Any], expires_in: int) -> str:
        refuse_remote_call(f"S3 presigning of {operation}")
        try:
            url: str = await asyncio.to_thread(
                self._client.generate_presigned_url,
                operation,
                Params={"Bucket": self._bucket, **params},
                ExpiresIn=expires_in,
            )
        except Exception as error:
            log.error("s3 presigning failed", exc_info=error)
            raise StorageUnavailable() from error
        return url

    async def presigned_put(
        self, key: str, *, content_type: str, size_bytes: int, expires_in: int
    ) -> PresignedRequest:
        issued = self._clock()
        # Content-Type and Content-Length become signed headers: S3 refuses a PUT of another
        # type or size, so the URL cannot carry more than the plan allowed.
        url = await self._presign(
            "put_object",
            {"Key": key, "ContentType": content_type, "ContentLength": size_bytes},
            expires_in,
        )
        return PresignedRequest(
            url=url,
            method="PUT",
            expires_at=issued + datetime.timedelta(seconds=expires_in),
            headers={"Content-Type": content_type},
        )

    async def presigned_get(
        self, key: str, *, expires_in: int, content_type: str, content_disposition: str
    ) -> PresignedRequest:
        issued = self._clock()
        # The response headers are part of the signed URL: S3 serves the bytes with our
        # content type and disposition, whatever the object was stored with.
        url = await self._presign(
            "get_object",
            {
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition,
            },
            expires_in,
        )
        return PresignedRequest(
            url=url, method="GET", expires_at=issued + datetime.timedelta(seconds=expires_in)
        )


def _is_missing(error: Exception) -> bool:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def build_store(settings: AssetsSettings) -> ObjectStore:
    if settings.storage_backend == "s3":
        return S3Store.from_settings(settings)
    return DirectoryStore(settings.storage_path)
