"""Tables of the `assets` schema, and the values stored in and read from them.

An asset row is recorded `pending` before its object is written and becomes `ready` only
once the object (and its thumbnail) are stored, so a crash leaves a pending row the
sweeper can clean up, never a ready row without bytes. Storage keys are made here from
ids only (`users/<owner>/<asset>/<name>`); nothing a user sends ends up in a key.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from runtime.db import schema_metadata
from runtime.events import event_cursor_table, parked_event_table
from runtime.tombstones import tombstone_table

SCHEMA = "assets"
metadata = schema_metadata(SCHEMA)

FILENAME_MAX = 255
IDEMPOTENCY_KEY_MAX = 255
STORAGE_KEY_MAX = 255

# Postgres proves a partial index usable only when the query repeats its predicate with
# constants, so the repository renders these same SQL fragments (never bind parameters).
LISTED = "deleted_at IS NULL AND state = 'ready'"
PENDING = "state = 'pending'"
AWAITING_PURGE = "deleted_at IS NOT NULL AND purged_at IS NULL"
UNSETTLED = "state = 'ready' AND reservation_id IS NOT NULL"


ASSETS_COMMENT = (
    "Images in object storage (uploads and edit results): storage key, sniffed MIME type, "
    "size, dimensions, SHA-256, sanitized file name; pending until the object is stored"
)
VARIANTS_COMMENT = "Images derived from an asset (the 512 px thumbnail), stored next to it"


class AssetKind(enum.StrEnum):
    UPLOAD = "upload"
    EDIT_RESULT = "edit_result"


class AssetState(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"


class IdempotencyScope(enum.StrEnum):
    """Whose retry key an asset was stored under: the same string from a browser's
    `Idempotency-Key` header and from a service's StoreAsset header are different keys."""

    UPLOAD = "upload"  # UploadAsset, the public upload (HTTP Idempotency-Key header)
    STORE = "store"  # StoreAsset, another service's streamed store


ORIGINAL = "original"
THUMBNAIL = "thumbnail"
# Where a direct upload's presigned PUT writes. The URL keeps working until it expires,
# so the validated bytes are copied to ORIGINAL, a key no client can write.
INCOMING = "incoming"
VARIANT_NAMES = (THUMBNAIL,)


# Every object lives under this prefix: the orphan sweep lists nothing else.
OBJECTS_PREFIX = "users/"


def owner_prefix(owner_id: uuid.UUID) -> str:
    return f"{OBJECTS_PREFIX}{owner_id}/"


def asset_prefix(owner_id: uuid.UUID, asset_id: uuid.UUID) -> str:
    """The folder every object of one asset lives under."""
    return f"{owner_prefix(owner_id)}{asset_id}/"


def asset_id_of_key(key: str) -> uuid.UUID | None:
    """The asset a storage key belongs to, when it has the shape object_key makes."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != OBJECTS_PREFIX:
        return None
    try:
        return uuid.UUID(parts[2])
    except ValueError:
        return None


def object_key(owner_id: uuid.UUID, asset_id: uuid.UUID, name: str) -> str:
    return asset_prefix(owner_id, asset_id) + name


assets = Table(
    "assets",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("kind", Text, nullable=False, comment="upload or edit_result"),
    Column("state", Text, nullable=False, comment="pending (object not yet validated) or ready"),
    Column(
        "storage_key",
        String(STORAGE_KEY_MAX),
        nullable=False,
        comment="the original object's key in the bucket",
    ),
    # Sniffed from the content; NULL only while a direct upload is pending.
    Column(
        "mime_type",
        Text,
        nullable=True,
        comment="sniffed from the content; NULL only while a direct upload is pending",
    ),
    # Of the original object; while a direct upload is pending, the announced size.
    Column(
        "size_bytes",
        BigInteger,
        nullable=False,
        comment="of the original object; while a direct upload is pending, the announced size",
    ),
    # After EXIF orientation, as the image is shown.
    Column(
        "width",
        Integer,
        nullable=True,
        comment="width in pixels after EXIF orientation; NULL while pending",
    ),
    Column(
        "height",
        Integer,
        nullable=True,
        comment="height in pixels after EXIF orientation; NULL while pending",
    ),
    Column(
        "sha256",
        String(64),
        nullable=True,
        comment="hex SHA-256 of the original object; NULL while pending",
    ),
    Column(
        "filename", String(FILENAME_MAX), nullable=False, comment="the file name the client gave"
    ),
    # The client's retry key, unique per owner and scope (NULLs never collide).
    Column(
        "idempotency_key",
        String(IDEMPOTENCY_KEY_MAX),
        nullable=True,
        comment="the client's retry key, unique per owner and scope",
    ),
    Column(
        "idempotency_scope",
        Text,
        nullable=True,
        comment="whose retry key: 'upload' (the Idempotency-Key header) or 'store' (StoreAsset)",
    ),
    # The storage-quota reservation taken before the object was written; cleared once
    # committed, so a commit that failed is retried by the sweeper.
    Column(
        "reservation_id",
        Text,
        nullable=True,
        comment="the storage-quota reservation not yet committed; cleared once committed",
    ),
    Column(
        "reserved_bytes",
        BigInteger,
        nullable=True,
        comment="bytes of a reservation the caller made (StoreAsset); the surplus over "
        "size_bytes is credited back once it is committed",
    ),
    # Created by CreateUploadUrl: the client writes the object, ConfirmUpload validates it.
    Column(
        "direct_upload",
        Boolean,
        nullable=False,
        server_default=false(),
        comment="CreateUploadUrl: the client writes the object, ConfirmUpload validates it",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "deleted_at",
        DateTime(timezone=True),
        nullable=True,
        comment="soft delete: when it was deleted; NULL while live",
    ),
    # When the objects of a deleted asset were removed and its storage credited back.
    Column(
        "purged_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when its objects were removed and its storage credited back",
    ),
    # A workflow step's lease (ADR 0011): the sweeper (or the request itself) claimed the
    # row until then to abandon, purge or settle it. A pending row that was ever claimed
    # is being abandoned and can never become ready.
    Column(
        "next_attempt_at",
        DateTime(timezone=True),
        nullable=True,
        comment="lease of a claimed row (abandon, purge, settle) until then; "
        "a pending row ever claimed never becomes ready",
    ),
    UniqueConstraint("storage_key"),
    UniqueConstraint("owner_id", "idempotency_scope", "idempotency_key"),
    CheckConstraint("kind IN ('upload', 'edit_result')", name="kind_known"),
    CheckConstraint("state IN ('pending', 'ready')", name="state_known"),
    CheckConstraint("size_bytes >= 0", name="size_not_negative"),
    CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
    CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
    CheckConstraint(
        "state <> 'ready' OR (mime_type IS NOT NULL AND width IS NOT NULL "
        "AND height IS NOT NULL AND sha256 IS NOT NULL)",
        name="ready_has_metadata",
    ),
    CheckConstraint("purged_at IS NULL OR deleted_at IS NOT NULL", name="purged_after_deleted"),
    CheckConstraint("idempotency_scope IN ('upload', 'store')", name="idempotency_scope_known"),
    CheckConstraint(
        "(idempotency_key IS NULL) = (idempotency_scope IS NULL)", name="idempotency_key_scoped"
    ),
    comment=ASSETS_COMMENT,
)

# A user's assets newest first (keyset on created_at, id, scanned backwards), with and
# without the kind filter; only listed rows are indexed.
Index(
    "ix_assets_owner_newest",
    assets.c.owner_id,
    assets.c.created_at,
    assets.c.id,
    postgresql_where=text(LISTED),
)
Index(
    "ix_assets_owner_kind_newest",
    assets.c.owner_id,
    assets.c.kind,
    assets.c.created_at,
    assets.c.id,
    postgresql_where=text(LISTED),
)
# The sweeper: rows stuck pending (oldest first), deleted rows whose objects remain, and
# ready rows whose storage reservation is not yet committed.
Index("ix_assets_pending_created", assets.c.created_at, postgresql_where=text(PENDING))
Index("ix_assets_awaiting_purge", assets.c.deleted_at, postgresql_where=text(AWAITING_PURGE))
Index("ix_assets_unsettled", assets.c.created_at, postgresql_where=text(UNSETTLED))
# PurgeUser reads every row of one owner through the unique (owner, scope, key) index.

asset_variants = Table(
    "asset_variants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "asset_id",
        UUID(as_uuid=True),
        ForeignKey("assets.assets.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column(
        "storage_key",
        String(STORAGE_KEY_MAX),
        nullable=False,
        comment="the variant's object key in the bucket",
    ),
    Column("mime_type", Text, nullable=False, comment="MIME type of the variant"),
    Column("size_bytes", BigInteger, nullable=False, comment="size of the variant object in bytes"),
    Column("width", Integer, nullable=False, comment="variant width in pixels"),
    Column("height", Integer, nullable=False, comment="variant height in pixels"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One variant of each name per asset; also serves the foreign key's lookups.
    UniqueConstraint("asset_id", "name"),
    UniqueConstraint("storage_key"),
    CheckConstraint("size_bytes >= 0", name="size_not_negative"),
    CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
    comment=VARIANTS_COMMENT,
)


@dataclass(frozen=True)
class Variant:
    """A derived image of an asset (the thumbnail)."""

    name: str
    storage_key: str
    mime_type: str
    size_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class Asset:
    id: uuid.UUID
    owner_id: uuid.UUID
    kind: AssetKind
    state: AssetState
    storage_key: str
    mime_type: str | None
    size_bytes: int
    width: int | None
    height: int | None
    sha256: str | None
    filename: str
    idempotency_key: str | None
    idempotency_scope: IdempotencyScope | None
    reservation_id: str | None
    direct_upload: bool
    created_at: datetime.datetime
    deleted_at: datetime.datetime | None
    purged_at: datetime.datetime | None
    next_attempt_at: datetime.datetime | None = None
    variants: tuple[Variant, ...] = ()
    # Set when the reservation was made by the caller (StoreAsset's header), for its size.
    reserved_bytes: int | None = None

    @property
    def prefix(self) -> str:
        return asset_prefix(self.owner_id, self.id)

    @property
    def object_keys(self) -> list[str]:
        """Every object the asset is known to have (the original and its variants)."""
        return [self.storage_key, *(v.storage_key for v in self.variants)]

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


# How far assets has followed identity's outbox (runtime.events).
event_cursors = event_cursor_table(metadata)
# Events its handlers kept failing on (runtime.events), and deleted accounts (runtime.tombstones).
parked_events = parked_event_table(metadata)
deleted_users = tombstone_table(metadata)
