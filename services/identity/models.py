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
- `outbox` rows are ordered by (xact_id, sequence): the writing transaction's id, then the
  row's sequence within it; ListEvents hands out only transactions older than every
  running one, so writers take no lock and no follower skips a late commit (ADR 0015).
  Events outlive users, so `outbox.user_id` is deliberately not a foreign key.
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
from runtime.events import Xid8

SCHEMA = "identity"
metadata = schema_metadata(SCHEMA)

# Postgres proves a partial index usable only when the query repeats its predicate, so
# the repository filters with these same conditions.
LIVE_USER = "deleted_at IS NULL"
LIVE_REFRESH_TOKEN = "rotated_at IS NULL AND revoked_at IS NULL"

FREE_TIER = "free"


def _timestamp(
    name: str, *, nullable: bool = False, default_now: bool = False, comment: str | None = None
) -> Column[Any]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        server_default=text("now()") if default_now else None,
        comment=comment,
    )


tiers = Table(
    "tiers",
    metadata,
    Column(
        "code",
        Text,
        primary_key=True,
        comment="stable tier id named in tokens and by billing (free, pro)",
    ),
    Column("name", Text, nullable=False),
    # Limits; 0 means unlimited.
    Column(
        "ai_edits_per_month",
        BigInteger,
        nullable=False,
        comment="AI edits allowed per calendar month; 0 = unlimited",
    ),
    Column(
        "storage_bytes",
        BigInteger,
        nullable=False,
        comment="bytes of stored images allowed; 0 = unlimited",
    ),
    Column(
        "max_projects",
        BigInteger,
        nullable=False,
        comment="live projects allowed; 0 = unlimited",
    ),
    Column(
        "max_upload_bytes",
        BigInteger,
        nullable=False,
        comment="largest upload accepted in bytes; 0 = unlimited",
    ),
    Column(
        "max_pixels",
        BigInteger,
        nullable=False,
        comment="largest image accepted (width x height); 0 = unlimited",
    ),
    Column(
        "features",
        JSONB,
        nullable=False,
        server_default=text("'{}'::jsonb"),
        comment="feature flags, a JSON object (e.g. public_presets); served as a Struct",
    ),
    Column(
        "stripe_price_id",
        Text,
        nullable=True,
        unique=True,
        comment="the Stripe price a checkout for this tier uses; NULL when not sold",
    ),
    Column(
        "purchasable",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="offered in checkout",
    ),
    Column(
        "sort_order",
        Integer,
        nullable=False,
        comment="display order in ListTiers",
    ),
    CheckConstraint(
        "ai_edits_per_month >= 0 AND storage_bytes >= 0 AND max_projects >= 0 "
        "AND max_upload_bytes >= 0 AND max_pixels >= 0",
        name="limits_not_negative",
    ),
    CheckConstraint("jsonb_typeof(features) = 'object'", name="features_is_object"),
    comment=(
        "Subscription tiers (Free, Pro): usage limits and feature flags; "
        "reference data changed only by migrations"
    ),
)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Normalized (NFKC + case fold); NULL only once the account is deleted and scrubbed.
    Column(
        "email",
        Text,
        nullable=True,
        comment="normalized (NFKC + case fold); NULL once the account is deleted and scrubbed",
    ),
    Column(
        "username",
        Text,
        nullable=True,
        comment="normalized (NFKC + case fold); NULL once deleted and scrubbed",
    ),
    Column(
        "password_hash",
        Text,
        nullable=True,
        comment="argon2id PHC string; NULL once deleted and scrubbed",
    ),
    Column("display_name", Text, nullable=False, server_default=text("''")),
    _timestamp(
        "email_verified_at",
        nullable=True,
        comment="when the current email was proven; NULL = not verified",
    ),
    Column(
        "username_skeleton",
        Text,
        nullable=True,
        comment="UTS #39 confusable skeleton of the username, unique among live users",
    ),
    Column(
        "pending_email",
        Text,
        nullable=True,
        comment="an address asked for and not yet confirmed by its link (ADR 0013)",
    ),
    Column(
        "tier_code",
        Text,
        ForeignKey(tiers.c.code, ondelete="RESTRICT"),
        nullable=False,
        server_default=text(f"'{FREE_TIER}'"),
        comment="the user's current tier",
    ),
    _timestamp("created_at", default_now=True),
    _timestamp("updated_at", default_now=True),
    _timestamp(
        "deleted_at",
        nullable=True,
        comment="soft delete: when the account was deleted (its personal data is scrubbed)",
    ),
    CheckConstraint(
        "deleted_at IS NOT NULL OR ((email IS NOT NULL OR pending_email IS NOT NULL) "
        "AND username IS NOT NULL AND password_hash IS NOT NULL)",
        name="live_user_is_complete",
    ),
    Index("uq_users_email_live", "email", unique=True, postgresql_where=text(LIVE_USER)),
    Index("uq_users_username_live", "username", unique=True, postgresql_where=text(LIVE_USER)),
    # Look-alike usernames ("paypal" with U+0430, a Cyrillic a) are one username.
    Index(
        "uq_users_username_skeleton_live",
        "username_skeleton",
        unique=True,
        postgresql_where=text(LIVE_USER),
    ),
    # Log-in by an address that is still pending (ADR 0013).
    Index("ix_users_pending_email", "pending_email", postgresql_where=text(LIVE_USER)),
    # Serves the foreign key (a tier cannot be deleted while users have it).
    Index("ix_users_tier_code", "tier_code"),
    # Every replica's set of recently deleted users, whose tokens are refused (ADR 0015).
    Index("ix_users_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    comment=(
        "Accounts: normalized email and username (unique among live "
        "users), argon2id password hash, tier; soft-deleted and scrubbed "
        "when the account is deleted"
    ),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False),
    Column(
        "user_agent",
        Text,
        nullable=False,
        server_default=text("''"),
        comment="User-Agent at log-in, shown by ListSessions",
    ),
    Column(
        "ip_address",
        Text,
        nullable=False,
        server_default=text("''"),
        comment="client address at log-in, shown by ListSessions",
    ),
    _timestamp("created_at", default_now=True),
    _timestamp(
        "last_used_at",
        default_now=True,
        comment="last log-in or refresh",
    ),
    _timestamp("expires_at"),
    _timestamp(
        "revoked_at",
        nullable=True,
        comment="when it ended early; NULL while it lasts",
    ),
    # Why it ended: log_out, revoked, password_changed, password_reset, refresh_token_reused…
    Column(
        "revoked_reason",
        Text,
        nullable=True,
        comment=(
            "why it ended: log_out, revoked, password_changed, password_reset, refresh_token_reused"
        ),
    ),
    # ListSessions (newest first, keyset), revoking a user's sessions, the foreign key.
    Index("ix_sessions_user_id_created_at_id", "user_id", "created_at", "id"),
    # The sweeper deleting sessions long expired.
    Index("ix_sessions_expires_at", "expires_at"),
    comment="Signed-in devices: one per log-in, ended by log-out, revocation or expiry",
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
        comment="the token this one was exchanged for; NULL for a session's first token",
    ),
    # SHA-256 of the opaque token; the token itself is never stored.
    Column(
        "token_hash",
        LargeBinary,
        nullable=False,
        unique=True,
        comment="SHA-256 of the opaque token; the token itself is never stored",
    ),
    _timestamp(
        "issued_at", default_now=True, comment="when the token was issued (created or rotated to)"
    ),
    _timestamp("expires_at"),
    # When it was exchanged for its child (spent); presenting it again is reuse.
    _timestamp(
        "rotated_at",
        nullable=True,
        comment="when it was exchanged for its child (spent); presenting it again is reuse",
    ),
    _timestamp(
        "revoked_at",
        nullable=True,
        comment="when its session was revoked",
    ),
    CheckConstraint("octet_length(token_hash) = 32", name="token_hash_is_sha256"),
    Index("ix_refresh_tokens_session_id", "session_id"),
    Index("ix_refresh_tokens_parent_id", "parent_id"),
    Index(
        "uq_refresh_tokens_live_per_session",
        "session_id",
        unique=True,
        postgresql_where=text(LIVE_REFRESH_TOKEN),
    ),
    comment=(
        "Rotating refresh tokens of a session, stored as SHA-256 only; "
        "presenting a spent one revokes the session"
    ),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column(
        "kid",
        Uuid,
        primary_key=True,
        comment="key id, in the JWT header and the JWKS",
    ),
    Column(
        "algorithm",
        Text,
        nullable=False,
        server_default=text("'EdDSA'"),
        comment="the JWT signing algorithm; only EdDSA (Ed25519)",
    ),
    # PEM (SubjectPublicKeyInfo / PKCS#8). The private key is erased once the key retires.
    Column(
        "public_key",
        Text,
        nullable=False,
        comment="PEM SubjectPublicKeyInfo",
    ),
    Column(
        "private_key",
        Text,
        nullable=True,
        comment="PEM PKCS#8; erased once the key retires",
    ),
    _timestamp("created_at", default_now=True),
    # Signs from this moment (a rotated-in key is published before it signs).
    _timestamp(
        "activated_at",
        comment="signs from this moment (published before it signs)",
    ),
    # Stops signing at this moment; published until every token it signed has expired.
    _timestamp(
        "retired_at",
        nullable=True,
        comment="stops signing at this moment",
    ),
    CheckConstraint("algorithm = 'EdDSA'", name="algorithm_is_eddsa"),
    CheckConstraint(
        "retired_at IS NULL OR retired_at >= activated_at", name="retired_after_activated"
    ),
    comment=(
        "Ed25519 keys that sign access tokens; published in the JWKS "
        "until every token they signed has expired"
    ),
)

one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "token_hash",
        LargeBinary,
        nullable=False,
        unique=True,
        comment="SHA-256 of the mailed token; the token itself is never stored",
    ),
    Column("user_id", Uuid, ForeignKey(users.c.id, ondelete="CASCADE"), nullable=False),
    Column(
        "purpose",
        Text,
        nullable=False,
        comment="email_verification or password_reset",
    ),
    # The address the token was mailed to: verifying it proves this address, no other.
    Column(
        "email",
        Text,
        nullable=False,
        comment="the address the token was mailed to: verifying it proves this address only",
    ),
    _timestamp("created_at", default_now=True),
    _timestamp("expires_at"),
    _timestamp(
        "used_at",
        nullable=True,
        comment="when it was spent; NULL = unused",
    ),
    CheckConstraint(
        "purpose IN ('email_verification', 'password_reset', 'email_change')",
        name="purpose_is_known",
    ),
    CheckConstraint("octet_length(token_hash) = 32", name="token_hash_is_sha256"),
    # Invalidating a user's outstanding tokens of one purpose; the foreign key.
    Index("ix_one_time_tokens_user_id_purpose", "user_id", "purpose"),
    Index("ix_one_time_tokens_expires_at", "expires_at"),
    comment="Single-use email verification and password reset tokens, stored as SHA-256 only",
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "sequence",
        BigInteger,
        Identity(always=True),
        nullable=False,
        unique=True,
        comment="orders the rows of one transaction; not commit order across transactions",
    ),
    Column(
        "type",
        Text,
        nullable=False,
        comment="the event type, e.g. user.deleted or user.tier_changed",
    ),
    Column(
        "user_id", Uuid, nullable=True, comment="the user the event is about, when it is about one"
    ),
    Column(
        "payload",
        JSONB,
        nullable=False,
        server_default=text("'{}'::jsonb"),
        comment="the event's payload (ids and codes, no personal data)",
    ),
    _timestamp("created_at", default_now=True),
    # Written by the column default, never by the application (ADR 0015).
    Column(
        "xact_id",
        Xid8(),
        nullable=False,
        server_default=text("pg_current_xact_id()"),
        comment="the writing transaction (pg_current_xact_id()); 0 for rows older than 0002",
    ),
    Index("uq_outbox_xact_id_sequence", "xact_id", "sequence", unique=True),
    comment="Events for other services, in (xact_id, sequence) order; handed out only once "
    "their transaction is older than every running one (ADR 0015).",
)

outbox_followers = Table(
    "outbox_followers",
    metadata,
    Column(
        "follower",
        Text,
        primary_key=True,
        comment="the consuming service, as its service credential names it",
    ),
    Column(
        "xact_id",
        Xid8(),
        nullable=False,
        comment="with sequence: the last position the follower has handled",
    ),
    Column(
        "sequence",
        BigInteger,
        nullable=False,
        comment="with xact_id: the last position the follower has handled",
    ),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=False,
        comment="when the follower last reported its position",
    ),
    comment="How far each consuming service has read the outbox; pruning keeps every event a "
    "follower has not passed.",
)

mail_requests = Table(
    "mail_requests",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "purpose",
        Text,
        nullable=False,
        comment="what to mail; the mail worker decides to whom and whether",
    ),
    Column(
        "address",
        Text,
        nullable=True,
        comment="the address to resolve or to write to; the row is deleted once handled",
    ),
    Column(
        "user_id",
        Uuid,
        ForeignKey(users.c.id, ondelete="CASCADE"),
        nullable=True,
        comment="the account the mail is about, when the request names one",
    ),
    _timestamp(
        "requested_at", comment="when the mail was asked for (the worker handles oldest first)"
    ),
    _timestamp(
        "next_attempt_at",
        comment="a worker's claim lasts until then; a crashed worker's row is retried after it",
    ),
    Column(
        "attempts",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="how often a worker has claimed it",
    ),
    CheckConstraint(
        "purpose IN ('password_reset', 'email_verification', 'email_change', 'email_changed')",
        name="purpose_is_known",
    ),
    CheckConstraint("address IS NOT NULL OR user_id IS NOT NULL", name="has_recipient"),
    Index("ix_mail_requests_next_attempt_at", "next_attempt_at"),
    Index("ix_mail_requests_user_id", "user_id"),
    comment=(
        "Mail asked for and not yet handled: requests only write this row, the mail worker "
        "resolves the address and sends later (ADR 0013)"
    ),
)

mail_sends = Table(
    "mail_sends",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "subject_hash",
        LargeBinary,
        nullable=False,
        comment="SHA-256 of address:<address> or user:<id>; no address is stored",
    ),
    Column(
        "template",
        Text,
        nullable=False,
        comment="the kind of mail; the cooldown counts each kind, the daily cap all kinds",
    ),
    _timestamp(
        "sent_at",
        comment="when the mail was sent; the cooldown and the daily cap count from it",
    ),
    CheckConstraint("octet_length(subject_hash) = 32", name="subject_hash_is_sha256"),
    Index("ix_mail_sends_subject_hash_sent_at", "subject_hash", "sent_at"),
    Index("ix_mail_sends_sent_at", "sent_at"),
    comment="Mails sent per address and per user, for the cooldown and the daily cap",
)

login_failures = Table(
    "login_failures",
    metadata,
    Column(
        "scope",
        Text,
        nullable=False,
        comment="account or ip",
    ),
    # SHA-256 of the account id / attempted login / client address.
    Column(
        "subject_hash",
        LargeBinary,
        nullable=False,
        comment="SHA-256 of the account id, attempted login or client address (/64)",
    ),
    _timestamp(
        "bucket_start",
        comment="start of the counting window",
    ),
    Column(
        "failures",
        Integer,
        nullable=False,
        comment="failed attempts in the bucket",
    ),
    PrimaryKeyConstraint("scope", "subject_hash", "bucket_start"),
    CheckConstraint("scope IN ('account', 'ip')", name="scope_is_known"),
    CheckConstraint("failures >= 0", name="failures_not_negative"),
    # The sweeper deleting buckets older than every window.
    Index("ix_login_failures_bucket_start", "bucket_start"),
    comment=(
        "Failed log-ins counted per time bucket and hashed subject "
        "(account or client address), shared by every replica"
    ),
)


class TokenPurpose(enum.StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"
    # Confirms a pending address (users.pending_email) and moves the account to it.
    EMAIL_CHANGE = "email_change"


class MailPurpose(enum.StrEnum):
    PASSWORD_RESET = "password_reset"
    EMAIL_VERIFICATION = "email_verification"
    EMAIL_CHANGE = "email_change"
    # The old address is told that the account moved to another one.
    EMAIL_CHANGED = "email_changed"


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
    """A live user (deleted users are never handed out of the repository).

    `email` is None only while an account's one address is pending (a sign-up with an
    address another account has, ADR 0013); `shown_email` is what its owner is shown.
    """

    id: uuid.UUID
    email: str | None
    username: str
    password_hash: str
    display_name: str
    email_verified_at: datetime.datetime | None
    tier_code: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    pending_email: str | None = None

    @property
    def shown_email(self) -> str:
        return self.pending_email or self.email or ""

    @property
    def verified(self) -> bool:
        return self.email_verified_at is not None and self.pending_email is None


@dataclass(frozen=True)
class MailRequest:
    id: uuid.UUID
    purpose: MailPurpose
    address: str | None
    user_id: uuid.UUID | None
    requested_at: datetime.datetime
    attempts: int


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
    xact_id: int
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
