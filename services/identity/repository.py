"""Every SQL statement of identity, as methods of `IdentityRepository`.

The repository reads and writes; it never commits (the RPC boundary does). Statements on
hot paths (log-in lookups, refresh-token rotation) are built by module-level functions so
the index tests can EXPLAIN exactly the statement the service runs.

Times always come from the caller (the service's clock), never from `now()`, so that all
replicas and the tests agree on one clock per decision.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Delete,
    Select,
    Update,
    and_,
    any_,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.errors import AlreadyExists
from runtime.events import Position, Xid8
from services.identity.models import (
    LIVE_USER,
    MailPurpose,
    MailRequest,
    OneTimeToken,
    OutboxEvent,
    RefreshToken,
    Session,
    SigningKey,
    ThrottleBucket,
    ThrottleScope,
    Tier,
    TokenPurpose,
    User,
    login_failures,
    mail_requests,
    mail_sends,
    one_time_tokens,
    outbox,
    outbox_followers,
    refresh_tokens,
    sessions,
    signing_keys,
    tiers,
    users,
)

# Which field a unique violation is about, by constraint (index) name.
UNIQUE_FIELDS = {
    "uq_users_email_live": "email",
    "uq_users_username_live": "username",
    "uq_users_username_skeleton_live": "username",
}

# Serializes creating and rotating signing keys across replicas and the CLI.
SIGNING_KEYS_LOCK = "identity.signing_keys"


def live_user_by_email(email: str) -> Select[Any]:
    return select(users).where(users.c.email == email, text(LIVE_USER))


def live_user_by_username(username: str) -> Select[Any]:
    return select(users).where(users.c.username == username, text(LIVE_USER))


def spend_refresh_token(token_hash: bytes, now: datetime.datetime) -> Update:
    """The one conditional UPDATE that rotates a refresh token: only a live, unexpired
    token matches, so of two concurrent refreshes exactly one wins."""
    return (
        update(refresh_tokens)
        .where(
            refresh_tokens.c.token_hash == token_hash,
            refresh_tokens.c.rotated_at.is_(None),
            refresh_tokens.c.revoked_at.is_(None),
            refresh_tokens.c.expires_at > now,
        )
        .values(rotated_at=now)
        .returning(*refresh_tokens.c)
    )


def refresh_token_by_hash(token_hash: bytes) -> Select[Any]:
    return select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)


def lock_session_of_refresh_token(token_hash: bytes) -> Select[Any]:
    """The session a refresh token belongs to, locked: a refresh takes the session's lock
    before its token's, in the order revocations take them (sessions, then tokens)."""
    token_session = (
        select(refresh_tokens.c.session_id)
        .where(refresh_tokens.c.token_hash == token_hash)
        .scalar_subquery()
    )
    return select(sessions).where(sessions.c.id == token_session).with_for_update()


def active_sessions(
    user_id: uuid.UUID,
    now: datetime.datetime,
    *,
    after: tuple[datetime.datetime, uuid.UUID] | None,
    limit: int,
) -> Select[Any]:
    """A user's live sessions, newest first, keyset-paginated on (created_at, id)."""
    statement = select(sessions).where(
        sessions.c.user_id == user_id,
        sessions.c.revoked_at.is_(None),
        sessions.c.expires_at > now,
    )
    if after is not None:
        statement = statement.where(tuple_(sessions.c.created_at, sessions.c.id) < tuple_(*after))
    return statement.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(limit)


def events_page(after: Position, limit: int, types: Sequence[str]) -> CompoundSelect:
    """One statement, so one snapshot: up to `limit` events of `types` after `after`, and
    (a row with `tail` true) the last position of any type, both only of transactions
    older than every transaction still running (`pg_snapshot_xmin`). Those have all
    committed or aborted, so nothing can appear later at or before the returned position
    however late a writer commits (ADR 0015)."""
    position = tuple_(outbox.c.xact_id, outbox.c.sequence)
    start = tuple_(literal(after.xact_id, Xid8()), literal(after.sequence, BigInteger()))
    horizon = select(
        func.pg_snapshot_xmin(func.pg_current_snapshot(), type_=Xid8())
    ).scalar_subquery()
    readable = and_(position > start, outbox.c.xact_id < horizon)
    page = (
        select(*outbox.c, false().label("tail"))
        .where(readable, outbox.c.type.in_(list(types)))
        .order_by(outbox.c.xact_id, outbox.c.sequence)
        .limit(limit)
        .subquery()
    )
    tail = (
        select(*outbox.c, true().label("tail"))
        .where(readable)
        .order_by(outbox.c.xact_id.desc(), outbox.c.sequence.desc())
        .limit(1)
        .subquery()
    )
    return union_all(select(page), select(tail))


def prune_outbox(cutoff: datetime.datetime, limit: int) -> Delete:
    """Events every follower has passed and older than `cutoff`; nothing while no follower
    has reported (the minimum position is then NULL)."""
    slowest = select(outbox_followers).order_by(
        outbox_followers.c.xact_id, outbox_followers.c.sequence
    )
    slowest_xact = slowest.with_only_columns(outbox_followers.c.xact_id).limit(1)
    slowest_sequence = slowest.with_only_columns(outbox_followers.c.sequence).limit(1)
    doomed = (
        select(outbox.c.id)
        .where(
            outbox.c.created_at < cutoff,
            tuple_(outbox.c.xact_id, outbox.c.sequence)
            <= tuple_(slowest_xact.scalar_subquery(), slowest_sequence.scalar_subquery()),
        )
        .limit(limit)
    )
    return delete(outbox).where(outbox.c.id.in_(doomed))


def recently_deleted_users(since: datetime.datetime) -> Select[tuple[uuid.UUID]]:
    """Ids of the accounts deleted after `since`: what every replica reloads each second to
    refuse their still-valid access tokens (`outbox.deleted_users`, ADR 0015). Served by
    the partial index ix_users_deleted_at."""
    return select(users.c.id).where(users.c.deleted_at.is_not(None), users.c.deleted_at > since)


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        username=row.username,
        password_hash=row.password_hash,
        display_name=row.display_name,
        email_verified_at=row.email_verified_at,
        tier_code=row.tier_code,
        created_at=row.created_at,
        updated_at=row.updated_at,
        pending_email=row.pending_email,
    )


def _tier(row: Row[Any]) -> Tier:
    return Tier(
        code=row.code,
        name=row.name,
        ai_edits_per_month=row.ai_edits_per_month,
        storage_bytes=row.storage_bytes,
        max_projects=row.max_projects,
        max_upload_bytes=row.max_upload_bytes,
        max_pixels=row.max_pixels,
        features=dict(row.features),
        stripe_price_id=row.stripe_price_id,
        purchasable=row.purchasable,
    )


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        user_agent=row.user_agent,
        ip_address=row.ip_address,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _refresh_token(row: Row[Any]) -> RefreshToken:
    return RefreshToken(
        id=row.id,
        session_id=row.session_id,
        parent_id=row.parent_id,
        expires_at=row.expires_at,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
    )


def _signing_key(row: Row[Any]) -> SigningKey:
    return SigningKey(
        kid=row.kid,
        public_key_pem=row.public_key,
        private_key_pem=row.private_key,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
    )


def _one_time_token(row: Row[Any]) -> OneTimeToken:
    return OneTimeToken(
        id=row.id,
        user_id=row.user_id,
        purpose=TokenPurpose(row.purpose),
        email=row.email,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        xact_id=int(row.xact_id),
        sequence=row.sequence,
        id=row.id,
        type=row.type,
        user_id=row.user_id,
        payload=dict(row.payload),
        created_at=row.created_at,
    )


def _violated_constraint(error: IntegrityError) -> str | None:
    # SQLAlchemy wraps the DBAPI error, which wraps asyncpg's; the name is on the latter.
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


class IdentityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _lock(self, name: str) -> None:
        await self._session.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))

    async def _write_user(self, statement: Any) -> User:
        """Runs an INSERT/UPDATE … RETURNING on users; a lost uniqueness race (or plain
        duplicate) becomes ALREADY_EXISTS naming the field."""
        try:
            row = (await self._session.execute(statement)).one()
        except IntegrityError as error:
            field = UNIQUE_FIELDS.get(_violated_constraint(error) or "")
            if field is None:
                raise
            raise AlreadyExists(
                f"{field} is already taken",
                reason=f"{field.upper()}_TAKEN",
                metadata={"field": field},
            ) from None
        return _user(row)

    # Tiers

    async def list_tiers(self) -> list[Tier]:
        rows = await self._session.execute(select(tiers).order_by(tiers.c.sort_order, tiers.c.code))
        return [_tier(row) for row in rows]

    async def tier(self, code: str) -> Tier | None:
        row = (await self._session.execute(select(tiers).where(tiers.c.code == code))).first()
        return _tier(row) if row else None

    # Users

    async def insert_user(
        self,
        *,
        user_id: uuid.UUID,
        email: str | None,
        username: str,
        username_skeleton: str,
        password_hash: str,
        display_name: str,
        tier_code: str,
        now: datetime.datetime,
        pending_email: str | None = None,
    ) -> User:
        return await self._write_user(
            insert(users)
            .values(
                id=user_id,
                email=email,
                pending_email=pending_email,
                username=username,
                username_skeleton=username_skeleton,
                password_hash=password_hash,
                display_name=display_name,
                tier_code=tier_code,
                created_at=now,
                updated_at=now,
            )
            .returning(*users.c)
        )

    async def live_user(
        self, user_id: uuid.UUID, *, for_update: bool = False, key_share: bool = False
    ) -> User | None:
        """`for_update` locks the row against every other lock; `key_share` only against
        FOR UPDATE (what password changes and resets take), so readers do not queue."""
        statement = select(users).where(users.c.id == user_id, text(LIVE_USER))
        if for_update:
            statement = statement.with_for_update()
        elif key_share:
            statement = statement.with_for_update(read=True, key_share=True)
        row = (await self._session.execute(statement)).first()
        return _user(row) if row else None

    async def live_user_by_email(self, email: str) -> User | None:
        row = (await self._session.execute(live_user_by_email(email))).first()
        return _user(row) if row else None

    async def newest_live_user_by_pending_email(self, email: str) -> User | None:
        """The most recent account that asked for `email` and has not confirmed it."""
        row = (
            await self._session.execute(
                select(users)
                .where(users.c.pending_email == email, text(LIVE_USER))
                .order_by(users.c.created_at.desc(), users.c.id.desc())
                .limit(1)
            )
        ).first()
        return _user(row) if row else None

    async def email_is_taken(self, email: str) -> bool:
        row = (await self._session.execute(live_user_by_email(email).limit(1))).first()
        return row is not None

    async def live_user_by_username(self, username: str) -> User | None:
        row = (await self._session.execute(live_user_by_username(username))).first()
        return _user(row) if row else None

    async def update_user(
        self, user_id: uuid.UUID, changes: Mapping[str, Any], now: datetime.datetime
    ) -> User:
        """Changes the named columns of a live user; ALREADY_EXISTS on a taken email/username."""
        return await self._write_user(
            update(users)
            .where(users.c.id == user_id, text(LIVE_USER))
            .values(**changes, updated_at=now)
            .returning(*users.c)
        )

    async def verify_email(
        self, user_id: uuid.UUID, email: str, now: datetime.datetime
    ) -> User | None:
        """Marks the address verified, only if it is still the user's address."""
        row = (
            await self._session.execute(
                update(users)
                .where(users.c.id == user_id, users.c.email == email, text(LIVE_USER))
                .values(
                    email_verified_at=func.coalesce(users.c.email_verified_at, now),
                    updated_at=now,
                )
                .returning(*users.c)
            )
        ).first()
        return _user(row) if row else None

    async def confirm_pending_email(
        self, user_id: uuid.UUID, email: str, now: datetime.datetime
    ) -> User | None:
        """Moves the account to its pending address, if `email` is still the one pending;
        ALREADY_EXISTS if another account took the address meanwhile."""
        try:
            return await self._write_user(
                update(users)
                .where(users.c.id == user_id, users.c.pending_email == email, text(LIVE_USER))
                .values(email=email, pending_email=None, email_verified_at=now, updated_at=now)
                .returning(*users.c)
            )
        except NoResultFound:
            return None

    async def scrub_user(self, user_id: uuid.UUID, now: datetime.datetime) -> bool:
        """Soft-deletes the user and erases every piece of personal data on the row."""
        result = await self._session.execute(
            update(users)
            .where(users.c.id == user_id, text(LIVE_USER))
            .values(
                deleted_at=now,
                updated_at=now,
                email=None,
                pending_email=None,
                username=None,
                username_skeleton=None,
                password_hash=None,
                display_name="",
                email_verified_at=None,
            )
            .returning(users.c.id)
        )
        return result.first() is not None

    # Sessions

    async def insert_session(
        self,
        *,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        user_agent: str,
        ip_address: str,
        now: datetime.datetime,
        expires_at: datetime.datetime,
    ) -> None:
        await self._session.execute(
            insert(sessions).values(
                id=session_id,
                user_id=user_id,
                user_agent=user_agent,
                ip_address=ip_address,
                created_at=now,
                last_used_at=now,
                expires_at=expires_at,
            )
        )

    async def session(self, session_id: uuid.UUID, *, for_update: bool = False) -> Session | None:
        statement = select(sessions).where(sessions.c.id == session_id)
        if for_update:
            statement = statement.with_for_update()
        row = (await self._session.execute(statement)).first()
        return _session(row) if row else None

    async def lock_session_of_refresh_token(self, token_hash: bytes) -> Session | None:
        row = (await self._session.execute(lock_session_of_refresh_token(token_hash))).first()
        return _session(row) if row else None

    async def extend_session(
        self, session_id: uuid.UUID, now: datetime.datetime, expires_at: datetime.datetime
    ) -> None:
        await self._session.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(last_used_at=now, expires_at=expires_at)
        )

    async def active_sessions(
        self,
        user_id: uuid.UUID,
        now: datetime.datetime,
        *,
        after: tuple[datetime.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Session]:
        statement = active_sessions(user_id, now, after=after, limit=limit)
        return [_session(row) for row in await self._session.execute(statement)]

    async def revoke_sessions(
        self,
        user_id: uuid.UUID,
        now: datetime.datetime,
        reason: str,
        *,
        only: uuid.UUID | None = None,
        keep: uuid.UUID | None = None,
    ) -> list[uuid.UUID]:
        """Revokes a user's live sessions (one, or all but one) and their refresh tokens."""
        statement = update(sessions).where(
            sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None)
        )
        if only is not None:
            statement = statement.where(sessions.c.id == only)
        if keep is not None:
            statement = statement.where(sessions.c.id != keep)
        result = await self._session.execute(
            statement.values(revoked_at=now, revoked_reason=reason).returning(sessions.c.id)
        )
        revoked = [row.id for row in result]
        if revoked:
            await self._session.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.session_id.in_(revoked),
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        return revoked

    async def delete_user_sessions(self, user_id: uuid.UUID) -> None:
        """Removes every session (and, by cascade, refresh token) of a user."""
        await self._session.execute(delete(sessions).where(sessions.c.user_id == user_id))

    async def user_owns_session(self, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
        row = (
            await self._session.execute(
                select(sessions.c.id).where(
                    sessions.c.id == session_id, sessions.c.user_id == user_id
                )
            )
        ).first()
        return row is not None

    # Refresh tokens

    async def insert_refresh_token(
        self,
        *,
        token_id: uuid.UUID,
        session_id: uuid.UUID,
        parent_id: uuid.UUID | None,
        token_hash: bytes,
        now: datetime.datetime,
        expires_at: datetime.datetime,
    ) -> None:
        await self._session.execute(
            insert(refresh_tokens).values(
                id=token_id,
                session_id=session_id,
                parent_id=parent_id,
                token_hash=token_hash,
                issued_at=now,
                expires_at=expires_at,
            )
        )

    async def spend_refresh_token(
        self, token_hash: bytes, now: datetime.datetime
    ) -> RefreshToken | None:
        row = (await self._session.execute(spend_refresh_token(token_hash, now))).first()
        return _refresh_token(row) if row else None

    async def spend_live_refresh_token(
        self, session_id: uuid.UUID, now: datetime.datetime, *, parents: Sequence[uuid.UUID]
    ) -> RefreshToken | None:
        """Spends the session's live token (there is at most one), but only if its parent
        is one of `parents`."""
        row = (
            await self._session.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.session_id == session_id,
                    refresh_tokens.c.parent_id.in_(parents),
                    refresh_tokens.c.rotated_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                    refresh_tokens.c.expires_at > now,
                )
                .values(rotated_at=now)
                .returning(*refresh_tokens.c)
            )
        ).first()
        return _refresh_token(row) if row else None

    async def refresh_token(self, token_hash: bytes) -> RefreshToken | None:
        row = (await self._session.execute(refresh_token_by_hash(token_hash))).first()
        return _refresh_token(row) if row else None

    # Signing keys

    async def lock_signing_keys(self) -> None:
        await self._lock(SIGNING_KEYS_LOCK)

    async def signing_key_at(self, now: datetime.datetime) -> SigningKey | None:
        """The key that signs at `now`: the most recently activated one still in service."""
        row = (
            await self._session.execute(
                select(signing_keys)
                .where(
                    signing_keys.c.activated_at <= now,
                    or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > now),
                    signing_keys.c.private_key.is_not(None),
                )
                .order_by(signing_keys.c.activated_at.desc())
                .limit(1)
            )
        ).first()
        return _signing_key(row) if row else None

    async def newest_signing_key(self) -> SigningKey | None:
        row = (
            await self._session.execute(
                select(signing_keys).order_by(signing_keys.c.activated_at.desc()).limit(1)
            )
        ).first()
        return _signing_key(row) if row else None

    async def published_signing_keys(
        self, retired_after: datetime.datetime, kid: uuid.UUID | None = None
    ) -> list[SigningKey]:
        """Keys not retired, or retired after `retired_after` (their tokens may still live)."""
        statement = select(signing_keys).where(
            or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > retired_after)
        )
        if kid is not None:
            statement = statement.where(signing_keys.c.kid == kid)
        statement = statement.order_by(signing_keys.c.activated_at.desc())
        return [_signing_key(row) for row in await self._session.execute(statement)]

    async def insert_signing_key(
        self,
        *,
        kid: uuid.UUID,
        public_key_pem: str,
        private_key_pem: str,
        now: datetime.datetime,
        activated_at: datetime.datetime,
    ) -> SigningKey:
        row = (
            await self._session.execute(
                insert(signing_keys)
                .values(
                    kid=kid,
                    public_key=public_key_pem,
                    private_key=private_key_pem,
                    created_at=now,
                    activated_at=activated_at,
                )
                .returning(*signing_keys.c)
            )
        ).one()
        return _signing_key(row)

    async def retire_signing_keys(self, *, keep: uuid.UUID, retire_at: datetime.datetime) -> None:
        """Every other key stops signing at `retire_at` (or never starts, if pending)."""
        await self._session.execute(
            update(signing_keys)
            .where(
                signing_keys.c.kid != keep,
                or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > retire_at),
            )
            .values(retired_at=func.greatest(signing_keys.c.activated_at, retire_at))
        )

    async def erase_retired_private_keys(self, now: datetime.datetime) -> int:
        result = await self._session.execute(
            update(signing_keys)
            .where(signing_keys.c.retired_at <= now, signing_keys.c.private_key.is_not(None))
            .values(private_key=None)
            .returning(signing_keys.c.kid)
        )
        return len(result.all())

    # One-time tokens

    async def insert_one_time_token(
        self,
        *,
        token_hash: bytes,
        user_id: uuid.UUID,
        purpose: TokenPurpose,
        email: str,
        now: datetime.datetime,
        expires_at: datetime.datetime,
    ) -> None:
        await self._session.execute(
            insert(one_time_tokens).values(
                id=uuid.uuid4(),
                token_hash=token_hash,
                user_id=user_id,
                purpose=purpose.value,
                email=email,
                created_at=now,
                expires_at=expires_at,
            )
        )

    async def use_one_time_token(
        self, token_hash: bytes, purpose: TokenPurpose, now: datetime.datetime
    ) -> OneTimeToken | None:
        """Marks the token used in one conditional UPDATE: a token works exactly once."""
        row = (
            await self._session.execute(
                update(one_time_tokens)
                .where(
                    one_time_tokens.c.token_hash == token_hash,
                    one_time_tokens.c.purpose == purpose.value,
                    one_time_tokens.c.used_at.is_(None),
                    one_time_tokens.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(*one_time_tokens.c)
            )
        ).first()
        return _one_time_token(row) if row else None

    async def invalidate_one_time_tokens(
        self, user_id: uuid.UUID, purposes: Sequence[TokenPurpose], now: datetime.datetime
    ) -> None:
        await self._session.execute(
            update(one_time_tokens)
            .where(
                one_time_tokens.c.user_id == user_id,
                one_time_tokens.c.purpose.in_([purpose.value for purpose in purposes]),
                one_time_tokens.c.used_at.is_(None),
            )
            .values(used_at=now)
        )

    async def delete_user_one_time_tokens(self, user_id: uuid.UUID) -> None:
        await self._session.execute(
            delete(one_time_tokens).where(one_time_tokens.c.user_id == user_id)
        )

    # Outbox

    async def append_event(
        self,
        *,
        event_type: str,
        user_id: uuid.UUID | None,
        payload: Mapping[str, Any],
        now: datetime.datetime,
    ) -> OutboxEvent:
        """No lock: the row's position is this transaction's id (ADR 0015)."""
        row = (
            await self._session.execute(
                insert(outbox)
                .values(
                    id=uuid.uuid4(),
                    type=event_type,
                    user_id=user_id,
                    payload=dict(payload),
                    created_at=now,
                )
                .returning(*outbox.c)
            )
        ).one()
        return _event(row)

    async def events_page(
        self, after: Position, limit: int, types: Sequence[str]
    ) -> tuple[list[OutboxEvent], Position]:
        """Events of `types` after `after`, and the position to ask after next time."""
        rows = list(await self._session.execute(events_page(after, limit, types)))
        events = sorted(
            (_event(row) for row in rows if not row.tail), key=lambda e: (e.xact_id, e.sequence)
        )
        following = after
        if len(events) == limit:
            following = Position(events[-1].xact_id, events[-1].sequence)
        else:
            # Every event of `types` up to the last readable row is in this page.
            for row in rows:
                if row.tail:
                    following = max(following, Position(int(row.xact_id), int(row.sequence)))
        return events, following

    async def record_follower(
        self, follower: str, position: Position, now: datetime.datetime
    ) -> None:
        """Remembers how far `follower` has handled the outbox; never moves it back."""
        statement = pg_insert(outbox_followers).values(
            follower=follower,
            xact_id=position.xact_id,
            sequence=position.sequence,
            updated_at=now,
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[outbox_followers.c.follower],
                set_={
                    "xact_id": statement.excluded.xact_id,
                    "sequence": statement.excluded.sequence,
                    "updated_at": statement.excluded.updated_at,
                },
                where=tuple_(outbox_followers.c.xact_id, outbox_followers.c.sequence)
                <= tuple_(statement.excluded.xact_id, statement.excluded.sequence),
            )
        )

    async def prune_outbox(self, cutoff: datetime.datetime, limit: int = 1000) -> int:
        result = await self._session.execute(prune_outbox(cutoff, limit))
        return int(getattr(result, "rowcount", 0) or 0)

    # Deferred mail

    async def insert_mail_request(
        self,
        *,
        purpose: MailPurpose,
        address: str | None,
        user_id: uuid.UUID | None,
        now: datetime.datetime,
    ) -> uuid.UUID:
        request_id = uuid.uuid4()
        await self._session.execute(
            insert(mail_requests).values(
                id=request_id,
                purpose=purpose.value,
                address=address,
                user_id=user_id,
                requested_at=now,
                next_attempt_at=now,
            )
        )
        return request_id

    async def claim_mail_requests(
        self, now: datetime.datetime, lease: datetime.timedelta, limit: int
    ) -> list[MailRequest]:
        """Due requests, oldest first, each claimed until `now + lease` (SKIP LOCKED: two
        workers never claim one row; the claim commits before any mail goes out)."""
        due = (
            select(mail_requests.c.id)
            .where(mail_requests.c.next_attempt_at <= now)
            .order_by(mail_requests.c.next_attempt_at, mail_requests.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._session.execute(
            update(mail_requests)
            # = ANY(ARRAY(…)): the claimed ids once, each a primary-key probe (ADR 0019).
            .where(mail_requests.c.id == any_(func.array(due)))
            .values(next_attempt_at=now + lease, attempts=mail_requests.c.attempts + 1)
            .returning(*mail_requests.c)
        )
        found = [
            MailRequest(
                id=row.id,
                purpose=MailPurpose(row.purpose),
                address=row.address,
                user_id=row.user_id,
                requested_at=row.requested_at,
                attempts=row.attempts,
            )
            for row in rows
        ]
        return sorted(found, key=lambda request: (request.requested_at, request.id))

    async def delete_mail_request(self, request_id: uuid.UUID) -> None:
        await self._session.execute(delete(mail_requests).where(mail_requests.c.id == request_id))

    async def delete_user_mail_requests(
        self, user_id: uuid.UUID, addresses: Sequence[str] = ()
    ) -> None:
        """A user's requests, and those naming one of its addresses (a reset request)."""
        await self._session.execute(
            delete(mail_requests).where(
                or_(
                    mail_requests.c.user_id == user_id,
                    mail_requests.c.address.in_(list(addresses)),
                )
            )
        )

    async def lock_mail_subject(self, subject_hash: bytes) -> None:
        """Serializes the rate-limit decision for one address or user (not globally)."""
        await self._session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(subject_hash.hex(), 0)))
        )

    async def mails_sent_since(
        self, subject_hash: bytes, since: datetime.datetime, *, template: str | None = None
    ) -> int:
        """Mails to a subject after `since`; of one kind, or of every kind."""
        statement = (
            select(func.count())
            .select_from(mail_sends)
            .where(mail_sends.c.subject_hash == subject_hash, mail_sends.c.sent_at > since)
        )
        if template is not None:
            statement = statement.where(mail_sends.c.template == template)
        return int(await self._session.scalar(statement) or 0)

    async def record_mail_sent(
        self, subject_hashes: Sequence[bytes], template: str, now: datetime.datetime
    ) -> None:
        if subject_hashes:
            await self._session.execute(
                insert(mail_sends),
                [
                    {"id": uuid.uuid4(), "subject_hash": h, "template": template, "sent_at": now}
                    for h in subject_hashes
                ],
            )

    async def forget_mail_sends(self, subject_hashes: Sequence[bytes]) -> None:
        await self._session.execute(
            delete(mail_sends).where(mail_sends.c.subject_hash.in_(list(subject_hashes)))
        )

    # Log-in throttle

    async def add_login_failure(
        self, scope: ThrottleScope, subject_hash: bytes, bucket_start: datetime.datetime
    ) -> None:
        statement = pg_insert(login_failures).values(
            scope=scope.value, subject_hash=subject_hash, bucket_start=bucket_start, failures=1
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[
                    login_failures.c.scope,
                    login_failures.c.subject_hash,
                    login_failures.c.bucket_start,
                ],
                set_={"failures": login_failures.c.failures + 1},
            )
        )

    async def login_failure_buckets(
        self, scope: ThrottleScope, subject_hash: bytes, since: datetime.datetime
    ) -> list[ThrottleBucket]:
        """Buckets that started after `since`, oldest first."""
        rows = await self._session.execute(
            select(login_failures.c.bucket_start, login_failures.c.failures)
            .where(
                login_failures.c.scope == scope.value,
                login_failures.c.subject_hash == subject_hash,
                login_failures.c.bucket_start > since,
            )
            .order_by(login_failures.c.bucket_start)
        )
        return [ThrottleBucket(start=row.bucket_start, failures=row.failures) for row in rows]

    async def remove_login_failure(
        self, scope: ThrottleScope, subject_hash: bytes, bucket_start: datetime.datetime
    ) -> None:
        await self._session.execute(
            update(login_failures)
            .where(
                login_failures.c.scope == scope.value,
                login_failures.c.subject_hash == subject_hash,
                login_failures.c.bucket_start == bucket_start,
            )
            .values(failures=func.greatest(login_failures.c.failures - 1, 0))
        )

    async def clear_login_failures(self, scope: ThrottleScope, subject_hash: bytes) -> None:
        await self._session.execute(
            delete(login_failures).where(
                login_failures.c.scope == scope.value,
                login_failures.c.subject_hash == subject_hash,
            )
        )

    # Sweeping

    async def sweep(
        self,
        *,
        sessions_expired_before: datetime.datetime,
        one_time_tokens_expired_before: datetime.datetime,
        login_failures_before: datetime.datetime,
        mail_sends_before: datetime.datetime | None = None,
    ) -> dict[str, int]:
        """Deletes rows nothing can use any more; answers how many per table."""
        statements: dict[str, Delete] = {
            "sessions": delete(sessions).where(sessions.c.expires_at < sessions_expired_before),
            "one_time_tokens": delete(one_time_tokens).where(
                one_time_tokens.c.expires_at < one_time_tokens_expired_before
            ),
            "login_failures": delete(login_failures).where(
                login_failures.c.bucket_start < login_failures_before
            ),
        }
        if mail_sends_before is not None:
            statements["mail_sends"] = delete(mail_sends).where(
                mail_sends.c.sent_at < mail_sends_before
            )
        counts = {}
        for table, statement in statements.items():
            result = await self._session.execute(statement)
            counts[table] = int(getattr(result, "rowcount", 0) or 0)
        return counts
