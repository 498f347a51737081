"""Tables of the `projects` schema, and the values read from them.

The history is a tree kept with O(1) pointers (ADR 0012):
- `projects.head_edit_id` is where the project is now (NULL: the original);
- `edits.parent_id` is the head the edit was applied on (NULL: the original), so undo is
  one pointer read;
- `edits.latest_child_id` (and `projects.root_latest_child_id` for the original) is the
  most recently created succeeded child, set when a child succeeds, so redo is one read;
- `edits.branch_id` + `edits.depth` place each edit on a chain ("branch"): an edit whose
  parent had no child yet continues the parent's branch, any later child starts a new
  one, and the first edit of a branch stores `branch_path`, the (branch, deepest depth)
  pairs of the path from the original to its parent, each branch named by the `seq`
  of its first edit (small integers: a long path parses in microseconds). The path to
  head is then the head's branch up to its depth plus the head branch's `branch_path`:
  one row read, whatever the history's length, and `onHeadPath` of any edit is a
  dictionary lookup.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from runtime.db import schema_metadata
from runtime.events import event_cursor_table, parked_event_table
from runtime.tombstones import tombstone_table

SCHEMA = "projects"
metadata = schema_metadata(SCHEMA)

NAME_MAX = 120
BRANCH_PATH_COMMENT = (
    "on a branch's first edit: [[branch's first seq, deepest depth], ...] from the original"
)
REQUEST_ID_MAX = 128

# Partial-index predicates, rendered as SQL constants by the repository so Postgres can
# prove the index usable.
LIVE = "deleted_at IS NULL"
PENDING = "status = 'pending'"
UNSETTLED = "status <> 'pending' AND settled_at IS NULL"
AWAITING_PURGE = "deleted_at IS NOT NULL"
UNCREDITED = "deleted_at IS NOT NULL AND credited_at IS NULL"

# The sweeper's lease clocks (ADR 0012): a claim moves them to the end of its lease, so a
# row one sweeper works on is not due for another until then. Only the sweeper's own
# statements read them; an edit's domain value and its reads leave `settle_after` out.
SETTLE_AFTER_COMMENT = (
    "the sweeper settles the edit's reservations no earlier than this: its insert, "
    "then the end of each sweeper claim's lease (never shown to clients)"
)
SWEEP_AFTER_COMMENT = (
    "the sweeper settles the project's unit or purges it no earlier than this: its "
    "insert, then the end of each sweeper claim's lease"
)
SWEEPER_ONLY_EDIT_COLUMNS = ("settle_after",)


class EditAction(enum.StrEnum):
    RETOUCH = "retouch"
    FILTER = "filter"
    ADJUST = "adjust"
    CROP = "crop"

    @property
    def is_ai(self) -> bool:
        return self is not EditAction.CROP


class EditStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


projects = Table(
    "projects",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("name", Text, nullable=False),
    Column(
        "original_asset_id",
        UUID(as_uuid=True),
        nullable=False,
        comment="the uploaded image (an assets id)",
    ),
    Column(
        "original_mime_type", Text, nullable=False, comment="MIME type of the uploaded original"
    ),
    Column(
        "original_width",
        Integer,
        nullable=False,
        comment="original width in pixels, as shown (after EXIF orientation)",
    ),
    Column(
        "original_height",
        Integer,
        nullable=False,
        comment="original height in pixels, as shown (after EXIF orientation)",
    ),
    Column(
        "original_bytes",
        BigInteger,
        nullable=False,
        comment="size of the uploaded original in bytes",
    ),
    Column(
        "head_edit_id",
        UUID(as_uuid=True),
        ForeignKey("edits.id", ondelete="SET NULL", use_alter=True),
        nullable=True,
        comment="where the project is now; NULL at the original",
    ),
    Column(
        "thumbnail_asset_id",
        UUID(as_uuid=True),
        nullable=False,
        comment="asset whose thumbnail variant shows the current image",
    ),
    Column(
        "root_latest_child_id",
        UUID(as_uuid=True),
        ForeignKey("edits.id", ondelete="SET NULL", use_alter=True),
        nullable=True,
        comment="latest succeeded edit applied to the original (redo from the original)",
    ),
    Column(
        "running_edit_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the one edit running now (one at a time per project)",
    ),
    Column(
        "edit_count",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="edits in the history tree",
    ),
    Column(
        "version",
        BigInteger,
        nullable=False,
        server_default=text("1"),
        comment="bumped on every change; optimistic concurrency",
    ),
    Column(
        "quota_reservation_id",
        Text,
        nullable=True,
        comment="billing reservation of the projects unit, until committed",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "deleted_at",
        DateTime(timezone=True),
        nullable=True,
        comment="soft delete: when it was deleted; NULL while live",
    ),
    Column(
        "credited_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when the projects unit of a deleted project went back to billing",
    ),
    Column(
        "sweep_after",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        comment=SWEEP_AFTER_COMMENT,
    ),
    CheckConstraint("edit_count >= 0", name="edit_count_not_negative"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 120", name="name_length"),
    Index(
        "ix_projects_owner_listing",
        "owner_id",
        text("created_at DESC"),
        text("id DESC"),
        postgresql_where=text(LIVE),
    ),
    Index("ix_projects_awaiting_purge", "deleted_at", postgresql_where=text(AWAITING_PURGE)),
    Index("ix_projects_uncredited", "deleted_at", postgresql_where=text(UNCREDITED)),
    Index("ix_projects_owner_id", "owner_id"),
    Index(
        "ix_projects_quota_reservation_id",
        "quota_reservation_id",
        postgresql_where=text("quota_reservation_id IS NOT NULL"),
    ),
    Index("ix_projects_head_edit_id", "head_edit_id"),
    Index("ix_projects_root_latest_child_id", "root_latest_child_id"),
    comment="Editing sessions on one uploaded photo; head points into the edit tree",
)

edits = Table(
    "edits",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "project_id",
        UUID(as_uuid=True),
        ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("owner_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("seq", Integer, nullable=False, comment="1, 2, ... per project"),
    Column(
        "parent_id",
        UUID(as_uuid=True),
        ForeignKey("edits.id", ondelete="CASCADE"),
        nullable=True,
        comment="head when it was applied; NULL: the original",
    ),
    Column("depth", Integer, nullable=False, comment="edits from the original to this one"),
    Column("branch_id", UUID(as_uuid=True), nullable=False, comment="first edit of its chain"),
    Column(
        "branch_path",
        JSONB,
        nullable=True,
        comment=BRANCH_PATH_COMMENT,
    ),
    Column(
        "latest_child_id",
        UUID(as_uuid=True),
        ForeignKey("edits.id", ondelete="SET NULL"),
        nullable=True,
        comment="most recently created succeeded child (redo)",
    ),
    Column("action", Text, nullable=False, comment="retouch, filter, adjust or crop"),
    Column("params", JSONB, nullable=False, comment="validated parameters, pixels and fractions"),
    Column(
        "preset_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the preset applied (presets service), if any",
    ),
    Column("preset_prompt", Text, nullable=True, comment="the preset's prompt at edit time"),
    Column("preset_version", Integer, nullable=True, comment="the preset's version at edit time"),
    Column(
        "source_asset_id",
        UUID(as_uuid=True),
        nullable=False,
        comment="the image the edit was applied to (assets service)",
    ),
    Column("source_mime_type", Text, nullable=False, comment="MIME type of the source image"),
    Column(
        "source_width",
        Integer,
        nullable=False,
        comment="source width in pixels, as shown (after EXIF orientation)",
    ),
    Column(
        "source_height",
        Integer,
        nullable=False,
        comment="source height in pixels, as shown (after EXIF orientation)",
    ),
    Column("source_bytes", BigInteger, nullable=False, comment="size of the source image in bytes"),
    Column(
        "result_asset_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the resulting image (assets service); NULL until it succeeded",
    ),
    Column(
        "result_mime_type",
        Text,
        nullable=True,
        comment="MIME type of the result; NULL until it succeeded",
    ),
    Column(
        "result_width",
        Integer,
        nullable=True,
        comment="result width in pixels; NULL until it succeeded",
    ),
    Column(
        "result_height",
        Integer,
        nullable=True,
        comment="result height in pixels; NULL until it succeeded",
    ),
    Column(
        "result_bytes",
        BigInteger,
        nullable=True,
        comment="size of the result in bytes; NULL until it succeeded",
    ),
    Column("status", Text, nullable=False, comment="pending, succeeded or failed"),
    Column("error", Text, nullable=True, comment="the failure's message; NULL unless failed"),
    Column("error_code", Text, nullable=True, comment="gRPC code name of the failure"),
    Column("engine", Text, nullable=False, comment="the image engine that ran the edit"),
    Column(
        "model", Text, nullable=True, comment="the AI model that ran the edit; NULL for local edits"
    ),
    Column(
        "finish_reason",
        Text,
        nullable=True,
        comment="the AI model's finish reason; NULL for local edits",
    ),
    Column(
        "input_tokens", Integer, nullable=True, comment="AI input tokens used; NULL for local edits"
    ),
    Column(
        "output_tokens",
        Integer,
        nullable=True,
        comment="AI output tokens used; NULL for local edits",
    ),
    Column(
        "duration_ms", Integer, nullable=True, comment="how long the engine took, in milliseconds"
    ),
    Column("request_id", Text, nullable=False, comment="the client's id; unique per project"),
    Column(
        "reapplied_from_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the edit this one re-applies (ReapplyEdit), if any",
    ),
    Column(
        "reapplied_from_project_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the project of the re-applied edit",
    ),
    Column(
        "ai_reservation_id",
        Text,
        nullable=True,
        comment="billing reservation of the ai_edits unit",
    ),
    Column(
        "storage_reservation_id",
        Text,
        nullable=True,
        comment="billing reservation holding room for the result",
    ),
    Column(
        "settled_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when reservations were committed or released (and preset use recorded)",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "finished_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when it succeeded or failed; NULL while pending",
    ),
    Column(
        "settle_after",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        comment=SETTLE_AFTER_COMMENT,
    ),
    UniqueConstraint("project_id", "seq"),
    UniqueConstraint("project_id", "request_id"),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
    CheckConstraint("action IN ('retouch', 'filter', 'adjust', 'crop')", name="action_known"),
    CheckConstraint("jsonb_typeof(params) = 'object'", name="params_is_object"),
    CheckConstraint(
        "status <> 'succeeded' OR result_asset_id IS NOT NULL", name="succeeded_has_result"
    ),
    CheckConstraint("seq >= 1 AND depth >= 1", name="positions_positive"),
    # Every pointer into the tree is indexed: a new edit asks whether its parent has a
    # child, and the cascades of a project's purge find referencing rows by them.
    Index("ix_edits_parent_id", "parent_id"),
    Index("ix_edits_latest_child_id", "latest_child_id"),
    Index("ix_edits_pending", "created_at", postgresql_where=text(PENDING)),
    # Keyed by the lease clock: rows another sweeper holds sort after every due one.
    Index("ix_edits_unsettled", "settle_after", postgresql_where=text(UNSETTLED)),
    comment="The history tree: every edit ever applied, with its parameters and result",
)

# How far projects has followed identity's outbox, the events its handler kept failing on
# (runtime.events), and deleted accounts (runtime.tombstones).
event_cursors = event_cursor_table(metadata)
parked_events = parked_event_table(metadata)
deleted_users = tombstone_table(metadata)


@dataclass(frozen=True)
class Edit:
    id: uuid.UUID
    project_id: uuid.UUID
    owner_id: uuid.UUID
    seq: int
    parent_id: uuid.UUID | None
    depth: int
    branch_id: uuid.UUID
    branch_path: list[list[Any]] | None
    latest_child_id: uuid.UUID | None
    action: EditAction
    params: dict[str, Any]
    preset_id: uuid.UUID | None
    preset_prompt: str | None
    preset_version: int | None
    source_asset_id: uuid.UUID
    source_mime_type: str
    source_width: int
    source_height: int
    source_bytes: int
    result_asset_id: uuid.UUID | None
    result_mime_type: str | None
    result_width: int | None
    result_height: int | None
    result_bytes: int | None
    status: EditStatus
    error: str | None
    error_code: str | None
    engine: str
    model: str | None
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: int | None
    request_id: str
    reapplied_from_id: uuid.UUID | None
    reapplied_from_project_id: uuid.UUID | None
    ai_reservation_id: str | None
    storage_reservation_id: str | None
    settled_at: datetime.datetime | None
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    on_head_path: bool = False
    # The seq of its branch's first edit, when the query joined it (history pages).
    branch_seq: int | None = None

    @classmethod
    def from_row(cls, row: Any, *, prefix: str = "", path: HeadPath | None = None) -> Edit:
        """An edit from a result row; with `path`, marked whether it lies on it."""
        mapping = row._mapping
        keys = _KEYS.get(prefix) or _KEYS.setdefault(
            prefix, [(name, f"{prefix}{name}") for name in (*EDIT_FIELDS, "branch_seq")]
        )
        values = {name: mapping.get(key) for name, key in keys}
        values["action"] = EditAction(values["action"])
        values["status"] = EditStatus(values["status"])
        if path is not None:
            values["on_head_path"] = path.holds(values["branch_seq"], values["depth"])
        return cls(**values)

    @property
    def prompt(self) -> str:
        """The prompt the engine gets: the preset's snapshot, else the user's words."""
        return self.preset_prompt or str(self.params.get("prompt", ""))


EDIT_FIELDS = tuple(c.name for c in edits.columns if c.name not in SWEEPER_ONLY_EDIT_COLUMNS)
_KEYS: dict[str, list[tuple[str, str]]] = {}


@dataclass(frozen=True)
class Image:
    """An image the project can show: the original or an edit's result."""

    asset_id: uuid.UUID
    mime_type: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class Project:
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    original: Image
    head_edit_id: uuid.UUID | None
    thumbnail_asset_id: uuid.UUID
    root_latest_child_id: uuid.UUID | None
    running_edit_id: uuid.UUID | None
    edit_count: int
    version: int
    quota_reservation_id: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    deleted_at: datetime.datetime | None
    credited_at: datetime.datetime | None
    head: Edit | None = field(default=None)

    @property
    def current(self) -> Image:
        """What the project shows now: the head's result, or the original."""
        head = self.head
        if head is None:
            return self.original
        assert head.result_asset_id is not None
        return Image(
            head.result_asset_id,
            head.result_mime_type or self.original.mime_type,
            head.result_width or 0,
            head.result_height or 0,
            head.result_bytes or 0,
        )

    @property
    def can_undo(self) -> bool:
        return self.head_edit_id is not None

    @property
    def can_redo(self) -> bool:
        if self.head is None:
            return self.root_latest_child_id is not None
        return self.head.latest_child_id is not None

    @classmethod
    def from_row(cls, row: Any, head: Edit | None = None) -> Project:
        return cls.from_mapping(row._mapping, head)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], head: Edit | None = None) -> Project:
        """A project from its columns by name (a result row's mapping, or the names and
        values of a driver row read by position)."""
        return cls(
            id=m["id"],
            owner_id=m["owner_id"],
            name=m["name"],
            original=Image(
                m["original_asset_id"],
                m["original_mime_type"],
                m["original_width"],
                m["original_height"],
                m["original_bytes"],
            ),
            head_edit_id=m["head_edit_id"],
            thumbnail_asset_id=m["thumbnail_asset_id"],
            root_latest_child_id=m["root_latest_child_id"],
            running_edit_id=m["running_edit_id"],
            edit_count=m["edit_count"],
            version=m["version"],
            quota_reservation_id=m["quota_reservation_id"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            deleted_at=m["deleted_at"],
            credited_at=m["credited_at"],
            head=head,
        )


class HeadAt(NamedTuple):
    """Where head stands in the tree: what a history page needs of it (an `Edit` has the
    same three fields)."""

    id: uuid.UUID
    depth: int
    branch_id: uuid.UUID


class PageSpan(NamedTuple):
    """What a history page reads of its live project: how many edits it has and where
    head stands (None: at the original)."""

    edit_count: int
    head: HeadAt | None


class HeadPath:
    """The path from the original to head, as {branch: deepest depth on the path}."""

    def __init__(self, segments: dict[int, int]) -> None:
        self._segments = segments

    @classmethod
    def of(
        cls,
        head: Edit | HeadAt | None,
        start_seq: int,
        head_branch_path: list[list[Any]] | None,
    ) -> HeadPath:
        """`start_seq` and `head_branch_path`: seq and stored path of head's branch start."""
        if head is None:
            return cls({})
        segments = {int(branch): int(depth) for branch, depth in head_branch_path or []}
        segments[start_seq] = head.depth
        return cls(segments)

    def holds(self, branch_seq: int | None, depth: int) -> bool:
        assert branch_seq is not None, "history queries join the branch's first seq"
        deepest = self._segments.get(branch_seq)
        return deepest is not None and depth <= deepest

    def contains(self, edit: Edit) -> bool:
        return self.holds(edit.branch_seq, edit.depth)
