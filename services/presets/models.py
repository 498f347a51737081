"""Tables of the `presets` schema, and the values stored in and read from them.

A preset with no owner is a system preset (seeded by migration 0002, read-only). Every
listing reads only live public rows or one owner's rows, so the ordered indexes are
partial over exactly those rows; `search` is a generated tsvector over name and
description with a GIN index (the database roles cannot install pg_trgm).
"""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR, UUID

from runtime.db import schema_metadata
from runtime.events import event_cursor_table, parked_event_table
from runtime.tombstones import tombstone_table

SCHEMA = "presets"
metadata = schema_metadata(SCHEMA)

NAME_MAX = 80
DESCRIPTION_MAX = 500
PROMPT_MAX = 2000
IDEMPOTENCY_KEY_MAX = 255

# Predicates of the partial indexes. Postgres uses a partial index only when it can
# prove the query implies the predicate, so the repository's queries state the same
# conditions with SQL constants, never bind parameters.
LIVE = "deleted_at IS NULL"
LIVE_PUBLIC = "deleted_at IS NULL AND visibility = 'public'"
SEARCH_DOCUMENT = "to_tsvector('simple'::regconfig, (name::text || ' '::text) || description::text)"


class Category(enum.StrEnum):
    FILTER = "filter"
    ADJUSTMENT = "adjustment"


class Visibility(enum.StrEnum):
    PRIVATE = "private"
    UNLISTED = "unlisted"
    PUBLIC = "public"


class Scope(enum.Enum):
    """Which presets a listing shows."""

    ALL = "all"  # system + the caller's own + public presets of others
    SYSTEM = "system"
    MINE = "mine"
    COMMUNITY = "community"  # public presets of other users


class Order(enum.Enum):
    NEWEST = "newest"
    POPULAR = "popular"
    USED = "used"


presets = Table(
    "presets",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # NULL for system presets.
    Column(
        "owner_id",
        UUID(as_uuid=True),
        nullable=True,
        comment=(
            "identity.users.id of its owner (checked through the API, no "
            "foreign key); NULL = system preset"
        ),
    ),
    Column("name", String(NAME_MAX), nullable=False),
    Column("description", String(DESCRIPTION_MAX), nullable=False, server_default=""),
    Column(
        "prompt",
        String(PROMPT_MAX),
        nullable=False,
        comment="the text sent to the AI engine",
    ),
    Column(
        "category",
        Text,
        nullable=False,
        comment="filter or adjustment",
    ),
    Column(
        "visibility",
        Text,
        nullable=False,
        server_default=Visibility.PRIVATE.value,
        comment="private (owner only), unlisted (anyone with the id) or public (listed)",
    ),
    # A fork is a copy: losing its source (purged user) only loses the attribution.
    Column(
        "forked_from_id",
        UUID(as_uuid=True),
        ForeignKey("presets.presets.id", ondelete="SET NULL"),
        nullable=True,
        comment=(
            "the preset this one was copied from; NULL for an original or "
            "once the source was purged"
        ),
    ),
    Column(
        "like_count",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="number of preset_likes rows, changed in the same transaction as them",
    ),
    Column(
        "use_count",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="number of preset_uses rows, changed in the same transaction as them",
    ),
    Column(
        "version",
        Integer,
        nullable=False,
        server_default="1",
        comment="bumped by every change of content; edits snapshot it with the prompt",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "deleted_at",
        DateTime(timezone=True),
        nullable=True,
        comment="soft delete: hidden from every listing, purged with its owner",
    ),
    Column(
        "search",
        TSVECTOR,
        Computed(SEARCH_DOCUMENT, persisted=True),
        nullable=False,
        comment="generated: tsvector of name and description for full-text search",
    ),
    Column(
        "idempotency_key",
        String(IDEMPOTENCY_KEY_MAX),
        nullable=True,
        comment="the Idempotency-Key CreatePreset was called with; unique per owner",
    ),
    Column(
        "request_sha256",
        LargeBinary,
        nullable=True,
        comment="digest of the CreatePreset request that key was first used for",
    ),
    CheckConstraint("category IN ('filter', 'adjustment')", name="category_known"),
    CheckConstraint("visibility IN ('private', 'unlisted', 'public')", name="visibility_known"),
    CheckConstraint("like_count >= 0", name="like_count_not_negative"),
    CheckConstraint("use_count >= 0", name="use_count_not_negative"),
    CheckConstraint("version >= 1", name="version_positive"),
    # System presets are public; a user preset is anything its owner chose.
    CheckConstraint("owner_id IS NOT NULL OR visibility = 'public'", name="system_is_public"),
    CheckConstraint(
        "(idempotency_key IS NULL) = (request_sha256 IS NULL)", name="idempotency_key_digest"
    ),
    comment=(
        "Filters and adjustments whose prompt is sent to the AI engine: "
        "system presets (no owner, seeded by migration) and users' own, "
        "private, unlisted or public"
    ),
)

# One index per listing order over live public rows, scanned backwards for
# "ORDER BY key DESC, id DESC" and for the keyset condition "(key, id) < (:key, :id)".
Index(
    "ix_presets_public_newest",
    presets.c.created_at,
    presets.c.id,
    postgresql_where=text(LIVE_PUBLIC),
)
Index(
    "ix_presets_public_popular",
    presets.c.like_count,
    presets.c.id,
    postgresql_where=text(LIVE_PUBLIC),
)
Index(
    "ix_presets_public_used",
    presets.c.use_count,
    presets.c.id,
    postgresql_where=text(LIVE_PUBLIC),
)
# "Mine" (one owner's presets, every visibility) and PurgeUser, which also removes the
# soft-deleted ones: hence not partial.
Index("ix_presets_owner_newest", presets.c.owner_id, presets.c.created_at, presets.c.id)
Index("ix_presets_search", presets.c.search, postgresql_using="gin", postgresql_where=text(LIVE))
# A retried CreatePreset finds the preset its key made (one per owner and key).
Index(
    "uq_presets_owner_id_idempotency_key",
    presets.c.owner_id,
    presets.c.idempotency_key,
    unique=True,
    postgresql_where=text("idempotency_key IS NOT NULL"),
)
# Hard deletes (PurgeUser) set forks' forked_from_id to NULL; find them without a scan.
Index(
    "ix_presets_forked_from_id",
    presets.c.forked_from_id,
    postgresql_where=text("forked_from_id IS NOT NULL"),
)

preset_likes = Table(
    "preset_likes",
    metadata,
    Column(
        "preset_id",
        UUID(as_uuid=True),
        ForeignKey("presets.presets.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "user_id",
        UUID(as_uuid=True),
        nullable=False,
        comment="identity.users.id of the user who likes it (checked through the API)",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One like per user and preset; also answers "does the caller like it?".
    PrimaryKeyConstraint("preset_id", "user_id"),
    comment=(
        "Likes: the many-to-many between users and presets, one row per "
        "pair; presets.like_count counts them"
    ),
)
# PurgeUser removes every like of one user.
Index("ix_preset_likes_user_id", preset_likes.c.user_id)

preset_uses = Table(
    "preset_uses",
    metadata,
    # One use per edit: a retried RecordPresetUse finds its row and counts nothing.
    Column(
        "edit_id",
        UUID(as_uuid=True),
        primary_key=True,
        comment="projects.edits.id of the edit that applied the preset (one use per edit)",
    ),
    Column(
        "preset_id",
        UUID(as_uuid=True),
        ForeignKey("presets.presets.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment=(
        "Each edit that applied a preset, once: makes RecordPresetUse "
        "idempotent; presets.use_count counts them"
    ),
)
Index("ix_preset_uses_preset_id", preset_uses.c.preset_id)


@dataclass(frozen=True)
class Preset:
    """A preset as one viewer sees it."""

    id: uuid.UUID
    owner_id: uuid.UUID | None
    name: str
    description: str
    prompt: str
    category: Category
    visibility: Visibility
    forked_from_id: uuid.UUID | None
    # Only when the source is still visible to the viewer.
    forked_from_name: str | None
    like_count: int
    use_count: int
    version: int
    liked: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @property
    def system(self) -> bool:
        return self.owner_id is None


# How far presets has followed identity's outbox (runtime.events).
event_cursors = event_cursor_table(metadata)
# Events its handlers kept failing on (runtime.events), and deleted accounts (runtime.tombstones).
parked_events = parked_event_table(metadata)
deleted_users = tombstone_table(metadata)
