"""Tables of the `identity` schema, and the records the repository reads from them.

Design notes (docs/database.md shows the resulting DDL):
- Email and username are stored already normalized (NFKC + case fold, see
  `service.normalize_identifier`); uniqueness is two partial unique indexes over live
  (non-deleted) users, which also serve log-in by email and by username.
- A deleted user keeps its row (soft delete) but its personal data is scrubbed to NULL;
  the CHECK keeps live users complete.
- Secrets are never stored: refresh and one-time tokens as SHA-256 digests only.
- A session has exactly one live refresh token; the partial unique index
  `uq_refresh_tokens_live_per_session` makes the database enforce it.
- `outbox.sequence` orders events for consumers (ListEvents); events outlive users, so
  `outbox.user_id` is deliberately not a foreign key.
- `login_failures` counts failed log-ins in time buckets keyed by a hash of the subject
  (account or address), so the throttle works across replicas and stores no address.
  Its natural key is the primary key: a surrogate UUID would only add an index.
- `tiers.code` is the primary key: tiers are reference data named in tokens and by
  billing; a UUID would add nothing but a join.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from runtime.db import schema_metadata

SCHEMA = "identity"
metadata = schema_metadata(SCHEMA)

# Postgres proves a partial index usable only when the query repeats its predicate, so
# the repository filters with these same conditions.
LIVE_USER = "deleted_at IS NULL"
LIVE_REFRESH_TOKEN = "rotated_at IS NULL AND revoked_at IS NULL"

FREE_TIER = "free"


def _timestamp(name: str, *, nullable: bool = False, default_now: bool = False) -> Column[Any]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        server_default=text("now()") if default_now else None,
    )


tiers = Table(
    "tiers",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    # Limits; 0 means unlimited.
    Column("ai_edits_per_month", BigInteger, nullable=False),
    Column("storage_bytes", BigInteger, nullable=False),
    Column("max_projects", BigInteger, nullable=False),
    Column("max_upload_bytes", BigInteger, nullable=False),
    Column("max_pixels", BigInteger, nullable=False),
    Column("features", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("stripe_price_id", Text, nullable=True, unique=True),
    Column("purchasable", Boolean, nullable=False, server_default=text("false")),
    Column("sort_order", Integer, nullable=False),
    CheckConstraint(
        "ai_edits_per_month >= 0 AND storage_bytes >= 0 AND max_projects >= 0 "
        "AND max_upload_bytes >= 0 AND max_pixels >= 0",
        name="limits_not_negative",
    ),
    CheckConstraint("jsonb_typeof(features) = 'object'", name="features_is_object"),
)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Normalized (NFKC + case fold); NULL only once the account is deleted and scrubbed.
    Column("email", Text, nullable=True),
    Column("username", Text, nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("display_name", Text, nullable=False, server_default=text("''")),
    _timestamp("email_verified_at", nullable=True),
    Column(
        "tier_code",
        Text,
        ForeignKey(tiers.c.code, ondelete="RESTRICT"),
        nullable=False,
        server_default=text(f"'{FREE_TIER}'"),
    ),
    _timestamp("created_at", default_now=True),
    _timestamp("updated_at", default_now=True),
    _timestamp("deleted_at", nullable=True),
    CheckConstraint(
        "deleted_at IS NOT NULL "
        "OR (email IS NOT NULL AND username IS NOT NULL AND password_hash IS NOT NULL)",
        name="live_user_is_complete",
    ),
    Index("uq_users_email_live", "email", unique=True, postgresql_where=text(LIVE_USER)),
    Index("uq_users_username_live", "username", unique=True, postgresql_where=text(LIVE_USER)),
    # Serves the foreign key (a tier cannot be deleted while users have it).
    Index("ix_users_tier_code", "tier_code"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False),
    Column("user_agent", Text, nullable=False, server_default=text("''")),
    Column("ip_address", Text, nullable=False, server_default=text("''")),
    _timestamp("created_at", default_now=True),
    _timestamp("last_used_at", default_now=True),
    _timestamp("expires_at"),
    _timestamp("revoked_at", nullable=True),
    # Why it ended: log_out, revoked, password_changed, password_reset, refresh_token_reused…
    Column("revoked_reason", Text, nullable=True),
    # ListSessions (newest first, keyset), revoking a user's sessions, the foreign key.
    Index("ix_sessions_user_id_created_at_id", "user_id", "created_at", "id"),
    # The sweeper deleting sessions long expired.
    Index("ix_sessions_expires_at", "expires_at"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("session_id", Uuid, ForeignKey(sessions.c.id, ondelete="CASCADE"), nullable=False),
    # The token this one was exchanged for; NULL for a session's first token.
    Column(
        "parent_id",
        Uuid,
        ForeignKey("refresh_tokens.id", ondelete="SET NULL"),
        nullable=True,
    ),
    # SHA-256 of the opaque token; the token itself is never stored.
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    _timestamp("issued_at", default_now=True),
    _timestamp("expires_at"),
    # When it was exchanged for its child (spent); presenting it again is reuse.
    _timestamp("rotated_at", nullable=True),
    _timestamp("revoked_at", nullable=True),
    CheckConstraint("octet_length(token_hash) = 32", name="token_hash_is_sha256"),
    Index("ix_refresh_tokens_session_id", "session_id"),
    Index("ix_refresh_tokens_parent_id", "parent_id"),
    Index(
        "uq_refresh_tokens_live_per_session",
        "session_id",
        unique=True,
        postgresql_where=text(LIVE_REFRESH_TOKEN),
    ),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Uuid, primary_key=True),
    Column("algorithm", Text, nullable=False, server_default=text("'EdDSA'")),
    # PEM (SubjectPublicKeyInfo / PKCS#8). The private key is erased once the key retires.
    Column("public_key", Text, nullable=False),
    Column("private_key", Text, nullable=True),
    _timestamp("created_at", default_now=True),
    # Signs from this moment (a rotated-in key is published before it signs).
    _timestamp("activated_at"),
    # Stops signing at this moment; published until every token it signed has expired.
    _timestamp("retired_at", nullable=True),
    CheckConstraint("algorithm = 'EdDSA'", name="algorithm_is_eddsa"),
    CheckConstraint(
        "retired_at IS NULL OR retired_at >= activated_at", name="retired_after_activated"
    ),
)

one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("user_id", Uuid, ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False),
    Column("purpose", Text, nullable=False),
    # The address the token was mailed to: verifying it proves this address, no other.
    Column("email", Text, nullable=False),
    _timestamp("created_at", default_now=True),
    _timestamp("expires_at"),
    _timestamp("used_at", nullable=True),
    CheckConstraint("purpose IN ('email_verification', 'password_reset')", name="purpose_is_known"),
    CheckConstraint("octet_length(token_hash) = 32", name="token_hash_is_sha256"),
    # Invalidating a user's outstanding tokens of one purpose; the foreign key.
    Index("ix_one_time_tokens_user_id_purpose", "user_id", "purpose"),
    Index("ix_one_time_tokens_expires_at", "expires_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Commit order: writers serialize on an advisory lock, so no consumer skips an event.
    Column("sequence", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("user_id", Uuid, nullable=True),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _timestamp("created_at", default_now=True),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("scope", Text, nullable=False),
    # SHA-256 of the account id / attempted login / client address.
    Column("subject_hash", LargeBinary, nullable=False),
    _timestamp("bucket_start"),
    Column("failures", Integer, nullable=False),
    PrimaryKeyConstraint("scope", "subject_hash", "bucket_start"),
    CheckConstraint("scope IN ('account', 'ip')", name="scope_is_known"),
    CheckConstraint("failures >= 0", name="failures_not_negative"),
    # The sweeper deleting buckets older than every window.
    Index("ix_login_failures_bucket_start", "bucket_start"),
)


class TokenPurpose(enum.StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"


class ThrottleScope(enum.StrEnum):
    ACCOUNT = "account"
    IP = "ip"


@dataclass(frozen=True)
class Tier:
    code: str
    name: str
    ai_edits_per_month: int
    storage_bytes: int
    max_projects: int
    max_upload_bytes: int
    max_pixels: int
    features: dict[str, Any] = field(default_factory=dict)
    stripe_price_id: str | None = None
    purchasable: bool = False


@dataclass(frozen=True)
class User:
    """A live user (deleted users are never handed out of the repository)."""

    id: uuid.UUID
    email: str
    username: str
    password_hash: str
    display_name: str
    email_verified_at: datetime.datetime | None
    tier_code: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclass(frozen=True)
class Session:
    id: uuid.UUID
    user_id: uuid.UUID
    user_agent: str
    ip_address: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime
    expires_at: datetime.datetime
    revoked_at: datetime.datetime | None

    def is_active(self, now: datetime.datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True)
class RefreshToken:
    id: uuid.UUID
    session_id: uuid.UUID
    parent_id: uuid.UUID | None
    expires_at: datetime.datetime
    rotated_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


@dataclass(frozen=True)
class SigningKey:
    kid: uuid.UUID
    public_key_pem: str
    private_key_pem: str | None
    activated_at: datetime.datetime
    retired_at: datetime.datetime | None


@dataclass(frozen=True)
class OneTimeToken:
    id: uuid.UUID
    user_id: uuid.UUID
    purpose: TokenPurpose
    email: str
    expires_at: datetime.datetime
    used_at: datetime.datetime | None


@dataclass(frozen=True)
class OutboxEvent:
    sequence: int
    id: uuid.UUID
    type: str
    user_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime.datetime


@dataclass(frozen=True)
class ThrottleBucket:
    start: datetime.datetime
    failures: int
