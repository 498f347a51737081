"""Column comments for every non-obvious column of the projects schema (issue 11).

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

SCHEMA = "projects"

# (table, column): comment; the same text is the column's `comment=` in the model.
COMMENTS: dict[tuple[str, str], str] = {
    ("edits", "action"): "retouch, filter, adjust or crop",
    ("edits", "preset_id"): "the preset applied (presets service), if any",
    ("edits", "preset_version"): "the preset's version at edit time",
    ("edits", "source_asset_id"): "the image the edit was applied to (assets service)",
    ("edits", "source_mime_type"): "MIME type of the source image",
    ("edits", "source_width"): "source width in pixels, as shown (after EXIF orientation)",
    ("edits", "source_height"): "source height in pixels, as shown (after EXIF orientation)",
    ("edits", "source_bytes"): "size of the source image in bytes",
    ("edits", "result_asset_id"): "the resulting image (assets service); NULL until it succeeded",
    ("edits", "result_mime_type"): "MIME type of the result; NULL until it succeeded",
    ("edits", "result_width"): "result width in pixels; NULL until it succeeded",
    ("edits", "result_height"): "result height in pixels; NULL until it succeeded",
    ("edits", "result_bytes"): "size of the result in bytes; NULL until it succeeded",
    ("edits", "status"): "pending, succeeded or failed",
    ("edits", "error"): "the failure's message; NULL unless failed",
    ("edits", "engine"): "the image engine that ran the edit",
    ("edits", "model"): "the AI model that ran the edit; NULL for local edits",
    ("edits", "finish_reason"): "the AI model's finish reason; NULL for local edits",
    ("edits", "input_tokens"): "AI input tokens used; NULL for local edits",
    ("edits", "output_tokens"): "AI output tokens used; NULL for local edits",
    ("edits", "duration_ms"): "how long the engine took, in milliseconds",
    ("edits", "reapplied_from_id"): "the edit this one re-applies (ReapplyEdit), if any",
    ("edits", "reapplied_from_project_id"): "the project of the re-applied edit",
    ("edits", "finished_at"): "when it succeeded or failed; NULL while pending",
    ("parked_events", "event_id"): "the outbox event's id (its idempotency key)",
    ("parked_events", "type"): "the event type, e.g. user.deleted",
    ("parked_events", "user_id"): "the user the event is about, when it is about one",
    ("parked_events", "payload"): "the event's payload as the outbox held it (ids only)",
    ("parked_events", "parked_at"): "when the handler gave up and the cursor moved past it",
    ("projects", "original_mime_type"): "MIME type of the uploaded original",
    ("projects", "original_width"): "original width in pixels, as shown (after EXIF orientation)",
    ("projects", "original_height"): "original height in pixels, as shown (after EXIF orientation)",
    ("projects", "original_bytes"): "size of the uploaded original in bytes",
    ("projects", "edit_count"): "edits in the history tree",
    ("projects", "version"): "bumped on every change; optimistic concurrency",
    ("projects", "deleted_at"): "soft delete: when it was deleted; NULL while live",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS {_quote(comment)}")


def downgrade() -> None:
    for table, column in COMMENTS:
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS NULL")
