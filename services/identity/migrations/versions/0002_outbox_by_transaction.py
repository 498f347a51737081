"""The outbox ordered by writing transaction, without a global lock (ADR 0015); the
positions followers have reached, so pruning waits for the slowest; no `mail.sent`
envelopes (recipients' addresses) left in the outbox; an index for the recently deleted
users every replica refuses.

Rows written before this revision get transaction id 0: they sort first, in their old
`sequence` order, so a follower's old cursor (0, sequence) keeps its meaning.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "identity"


def upgrade() -> None:
    # Mail envelopes carried addresses to every consumer; mail is not a cross-service event.
    op.execute(sa.text("DELETE FROM identity.outbox WHERE type = 'mail.sent'"))
    op.execute(
        sa.text(f"ALTER TABLE {SCHEMA}.outbox ADD COLUMN xact_id xid8 NOT NULL DEFAULT '0'::xid8")
    )
    op.execute(
        sa.text(
            f"ALTER TABLE {SCHEMA}.outbox ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id()"
        )
    )
    op.create_index(
        "uq_outbox_xact_id_sequence", "outbox", ["xact_id", "sequence"], unique=True, schema=SCHEMA
    )
    op.create_table_comment(
        "outbox",
        "Events for other services, in (xact_id, sequence) order; handed out only once "
        "their transaction is older than every running one (ADR 0015).",
        schema=SCHEMA,
    )
    op.execute(
        sa.text(
            f"COMMENT ON COLUMN {SCHEMA}.outbox.xact_id IS "
            "'the writing transaction (pg_current_xact_id()); 0 for rows older than 0002'"
        )
    )
    op.execute(
        sa.text(
            f"COMMENT ON COLUMN {SCHEMA}.outbox.sequence IS "
            "'orders the rows of one transaction; not commit order across transactions'"
        )
    )
    op.execute(
        sa.text(
            f"CREATE TABLE {SCHEMA}.outbox_followers ("
            " follower text NOT NULL,"
            " xact_id xid8 NOT NULL,"
            " sequence bigint NOT NULL,"
            " updated_at timestamptz NOT NULL,"
            " CONSTRAINT pk_outbox_followers PRIMARY KEY (follower))"
        )
    )
    op.create_table_comment(
        "outbox_followers",
        "How far each consuming service has read the outbox; pruning keeps every event a "
        "follower has not passed.",
        schema=SCHEMA,
    )
    for column, text in (
        ("follower", "the consuming service, as its service credential names it"),
        ("xact_id", "with sequence: the last position the follower has handled"),
        ("sequence", "with xact_id: the last position the follower has handled"),
        ("updated_at", "when the follower last reported its position"),
    ):
        op.execute(sa.text(f"COMMENT ON COLUMN {SCHEMA}.outbox_followers.{column} IS '{text}'"))

    op.create_index(
        "ix_users_deleted_at",
        "users",
        ["deleted_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_users_deleted_at", table_name="users", schema=SCHEMA)
    op.drop_table("outbox_followers", schema=SCHEMA)
    op.drop_index("uq_outbox_xact_id_sequence", table_name="outbox", schema=SCHEMA)
    op.drop_table_comment("outbox", schema=SCHEMA)
    op.execute(sa.text(f"COMMENT ON COLUMN {SCHEMA}.outbox.sequence IS NULL"))
    op.drop_column("outbox", "xact_id", schema=SCHEMA)
