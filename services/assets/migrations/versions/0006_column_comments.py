"""Column comments for every non-obvious column of the assets schema (issue 11).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "assets"

# (table, column): comment; the same text is the column's `comment=` in the model.
COMMENTS: dict[tuple[str, str], str] = {
    ("asset_variants", "storage_key"): "the variant's object key in the bucket",
    ("asset_variants", "mime_type"): "MIME type of the variant",
    ("asset_variants", "size_bytes"): "size of the variant object in bytes",
    ("asset_variants", "width"): "variant width in pixels",
    ("asset_variants", "height"): "variant height in pixels",
    ("assets", "owner_id"): "identity user id",
    ("assets", "kind"): "upload or edit_result",
    ("assets", "state"): "pending (object not yet validated) or ready",
    ("assets", "storage_key"): "the original object's key in the bucket",
    ("assets", "mime_type"): "sniffed from the content; NULL only while a direct upload is pending",
    (
        "assets",
        "size_bytes",
    ): "of the original object; while a direct upload is pending, the announced size",
    ("assets", "width"): "width in pixels after EXIF orientation; NULL while pending",
    ("assets", "height"): "height in pixels after EXIF orientation; NULL while pending",
    ("assets", "sha256"): "hex SHA-256 of the original object; NULL while pending",
    ("assets", "filename"): "the file name the client gave",
    ("assets", "idempotency_key"): "the client's retry key, unique per owner and scope",
    (
        "assets",
        "reservation_id",
    ): "the storage-quota reservation not yet committed; cleared once committed",
    (
        "assets",
        "direct_upload",
    ): "CreateUploadUrl: the client writes the object, ConfirmUpload validates it",
    ("assets", "deleted_at"): "soft delete: when it was deleted; NULL while live",
    ("assets", "purged_at"): "when its objects were removed and its storage credited back",
    ("parked_events", "event_id"): "the outbox event's id (its idempotency key)",
    ("parked_events", "type"): "the event type, e.g. user.deleted",
    ("parked_events", "user_id"): "the user the event is about, when it is about one",
    ("parked_events", "payload"): "the event's payload as the outbox held it (ids only)",
    ("parked_events", "parked_at"): "when the handler gave up and the cursor moved past it",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS {_quote(comment)}")


def downgrade() -> None:
    for table, column in COMMENTS:
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS NULL")
