"""Identity's business rules, on plain values; no gRPC, no protobuf, no commits.

- `Sessions`: log-in, refresh-token rotation, log-out, the caller's sessions.
- `Accounts`: sign-up, profile, e-mail verification, passwords, account deletion.
- `Tiers`: plans, users' tiers (set by billing) and the outbox other services read.
- `Housekeeping`: key rotation by age and sweeping what has expired.

Methods take the unit of work's `AsyncSession`, except the three that check a password
(log-in, change password, delete account): they take a `Transactions` factory and run
two short transactions around the deliberately slow argon2 check, so that no pooled
connection or throttle row lock is held while it runs.
"""

from __future__ import annotations

import datetime
import logging
import unicodedata
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.context import Principal
from runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from services.identity.errors import (
    FailAfterCommit,
    invalid_login,
    invalid_one_time_token,
    invalid_refresh_token,
    wrong_password,
)
from services.identity.keys import SigningKeys
from services.identity.mail import Mailer, MailMessage
from services.identity.models import (
    FREE_TIER,
    RefreshToken,
    Session,
    Tier,
    TokenPurpose,
    User,
)
from services.identity.passwords import PasswordHasher
from services.identity.repository import IdentityRepository
from services.identity.throttle import LoginThrottle, Reservation
from services.identity.tokens import AccessTokenIssuer, new_opaque_token, token_digest

log = logging.getLogger("pixelshop.identity")

Clock = Callable[[], datetime.datetime]
Transactions = Callable[[], AbstractAsyncContextManager[AsyncSession]]

EMAIL_MAX_LENGTH = 254
EMAIL_LOCAL_MAX_LENGTH = 64
USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32
USERNAME_PUNCTUATION = frozenset("._-")
DISPLAY_NAME_MAX_LENGTH = 64
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
# Characters RFC 5322 allows unquoted in a local part, besides letters and digits.
EMAIL_LOCAL_PUNCTUATION = frozenset("!#$%&'*+/=?^_`{|}~.-")

USER_DELETED_EVENT = "user.deleted"
USER_TIER_CHANGED_EVENT = "user.tier_changed"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# Identifiers and passwords


def normalize_identifier(value: str) -> str:
    """NFKC + case fold (approximately Unicode's NFKC_Casefold): "ALICE", "alice" and
    "alice" typed in full-width letters are one username. Normalizing again after
    folding keeps the result stable."""
    folded = unicodedata.normalize("NFKC", value.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


def _has_control_or_space(value: str) -> bool:
    return any(c.isspace() or unicodedata.category(c).startswith("C") for c in value)


def parse_email(value: str, field: str) -> str:
    """The normalized address, or INVALID_ARGUMENT naming `field`."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if len(value) > 4 * EMAIL_MAX_LENGTH:  # before normalizing a megabyte of junk
        raise InvalidArgument(field, f"must be at most {EMAIL_MAX_LENGTH} characters")
    address = normalize_identifier(value)
    if not address:
        raise InvalidArgument(field, "is required")
    if len(address) > EMAIL_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {EMAIL_MAX_LENGTH} characters")
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    valid = (
        bool(at and local and domain)
        and not _has_control_or_space(address)
        and len(local) <= EMAIL_LOCAL_MAX_LENGTH
        and all(c.isalnum() or c in EMAIL_LOCAL_PUNCTUATION for c in local)
        and not (local.startswith(".") or local.endswith(".") or ".." in local)
        and len(labels) >= 2
        and all(
            0 < len(label) <= 63
            and all(c.isalnum() or c == "-" for c in label)
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
        and not labels[-1].isdigit()
    )
    if not valid:
        raise InvalidArgument(field, "must be an email address")
    return address


def parse_username(value: str, field: str) -> str:
    """The normalized username: 3-32 letters, digits, '.', '_' or '-'."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if len(value) > 4 * USERNAME_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {USERNAME_MAX_LENGTH} characters")
    username = normalize_identifier(value)
    if not username:
        raise InvalidArgument(field, "is required")
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        raise InvalidArgument(
            field, f"must be {USERNAME_MIN_LENGTH}-{USERNAME_MAX_LENGTH} characters"
        )
    if not all(
        unicodedata.category(c).startswith("L")
        or unicodedata.category(c) == "Nd"
        or c in USERNAME_PUNCTUATION
        for c in username
    ):
        raise InvalidArgument(field, "may contain only letters, digits, '.', '_' and '-'")
    return username


def parse_password(value: str, field: str, *, new: bool) -> str:
    """The password in NFKC (so every keyboard and input method types the same one).
    New passwords must meet the policy; a presented one only needs to be plausible."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 4 * PASSWORD_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {PASSWORD_MAX_LENGTH} characters")
    password = unicodedata.normalize("NFKC", value)
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {PASSWORD_MAX_LENGTH} characters")
    if new and len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidArgument(field, f"must be at least {PASSWORD_MIN_LENGTH} characters")
    return password


def check_password_differs(password: str, field: str, *, email: str, username: str) -> None:
    if normalize_identifier(password) in (email, username):
        raise InvalidArgument(field, "must not be the account's email or username")


async def find_user_by_login(repository: IdentityRepository, login: str) -> User | None:
    """An email address when it has an '@' (usernames cannot), else a username."""
    if "@" in login:
        return await repository.live_user_by_email(login)
    return await repository.live_user_by_username(login)


# Values the API maps to and from protobuf


@dataclass(frozen=True)
class ClientInfo:
    """Who is calling, as far as the network can tell (recorded on sessions, throttled)."""

    address: str
    user_agent: str


@dataclass(frozen=True)
class IssuedTokens:
    user: User
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class ProfileChanges:
    """Fields to change; None leaves a field as it is. Values are already normalized."""

    display_name: str | None = None
    username: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class SessionPage:
    sessions: list[Session]
    # Keyset position of the last session when there are more.
    next_after: tuple[datetime.datetime, uuid.UUID] | None


class Sessions:
    def __init__(
        self,
        *,
        passwords: PasswordHasher,
        throttle: LoginThrottle,
        keys: SigningKeys,
        access_tokens: AccessTokenIssuer,
        session_idle: datetime.timedelta,
        refresh_grace: datetime.timedelta,
        clock: Clock,
    ) -> None:
        self._passwords = passwords
        self._throttle = throttle
        self._keys = keys
        self._access_tokens = access_tokens
        self._session_idle = session_idle
        self._refresh_grace = refresh_grace
        self._clock = clock

    async def caller(self, session: AsyncSession, principal: Principal) -> User:
        """The live user behind an access token whose session has not ended.

        Other services trust a valid token until it expires; identity owns the sessions,
        so for its own RPCs a log-out or revocation takes effect at once.
        """
        repository = IdentityRepository(session)
        record = await repository.session(principal.session_id)
        if (
            record is None
            or record.user_id != principal.user_id
            or not record.is_active(self._clock())
        ):
            raise Unauthenticated("the session has ended", reason="SESSION_ENDED")
        user = await repository.live_user(principal.user_id)
        if user is None:
            raise Unauthenticated("the session has ended", reason="SESSION_ENDED")
        return user

    async def start(self, session: AsyncSession, user: User, client: ClientInfo) -> IssuedTokens:
        """A new session with its first refresh token and an access token."""
        repository = IdentityRepository(session)
        now = self._clock()
        session_id = uuid.uuid4()
        expires_at = now + self._session_idle
        await repository.insert_session(
            session_id=session_id,
            user_id=user.id,
            user_agent=client.user_agent,
            ip_address=client.address,
            now=now,
            expires_at=expires_at,
        )
        return await self._issue(
            session, user, session_id, parent_id=None, now=now, expires_at=expires_at
        )

    async def _issue(
        self,
        session: AsyncSession,
        user: User,
        session_id: uuid.UUID,
        *,
        parent_id: uuid.UUID | None,
        now: datetime.datetime,
        expires_at: datetime.datetime,
    ) -> IssuedTokens:
        refresh_token = new_opaque_token()
        await IdentityRepository(session).insert_refresh_token(
            token_id=uuid.uuid4(),
            session_id=session_id,
            parent_id=parent_id,
            token_hash=token_digest(refresh_token),
            now=now,
            expires_at=expires_at,
        )
        kid, key = await self._keys.active_key(session)
        access_token = self._access_tokens.issue(
            user_id=user.id, session_id=session_id, tier=user.tier_code, now=now, kid=kid, key=key
        )
        return IssuedTokens(
            user=user,
            session_id=session_id,
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=self._access_tokens.ttl_seconds,
        )

    async def reserve_attempt(
        self, session: AsyncSession, *, account: str, client: ClientInfo
    ) -> Reservation:
        """Counts a password attempt against the account and the client's address before
        the password is checked; RESOURCE_EXHAUSTED when either is over its limit."""
        return await self._throttle.reserve(
            IdentityRepository(session), account=account, address=client.address, now=self._clock()
        )

    async def log_in(
        self, transactions: Transactions, login: str, password: str, client: ClientInfo
    ) -> IssuedTokens:
        """`login` is a normalized email or username. Unknown accounts are throttled and
        verified (against a dummy hash) exactly like known ones: same error, same time."""
        async with transactions() as session:
            repository = IdentityRepository(session)
            user = await find_user_by_login(repository, login)
            reservation = await self.reserve_attempt(
                session, account=f"user:{user.id}" if user else f"login:{login}", client=client
            )
        # Outside any transaction: argon2 is slow on purpose.
        if not await self._passwords.verify_or_dummy(
            user.password_hash if user else None, password
        ):
            raise invalid_login()
        assert user is not None  # verify_or_dummy never matches without an account
        upgraded_hash = (
            await self._passwords.hash(password)
            if self._passwords.needs_rehash(user.password_hash)
            else None
        )
        async with transactions() as session:
            repository = IdentityRepository(session)
            await self._throttle.refund(repository, reservation)
            # Locked (after the throttle rows: the order every password check takes),
            # so a reset or password change in flight finishes first and then refuses
            # this log-in; read unlocked, its "end every session" would miss this one.
            current = await repository.live_user(user.id, key_share=True)
            if current is None or current.password_hash != user.password_hash:
                raise invalid_login()  # deleted or password changed while we checked
            if upgraded_hash is not None:
                current = await repository.update_user(
                    user.id, {"password_hash": upgraded_hash}, self._clock()
                )
            return await self.start(session, current, client)

    async def refresh(self, session: AsyncSession, refresh_token: str) -> IssuedTokens:
        """Rotates the refresh token in one conditional UPDATE.

        A spent token presented again is reuse, and the whole session is revoked, with
        one exception for honest clients: within the grace window, a token whose *own
        child* is still the session's live token (the client never received that child:
        a lost response, or two calls racing with the same token) gets a replacement for
        that child. The child is spent in the same conditional way and its replacement
        keeps the same parent, so a retry of the retry works too, while:
        - the session never has more than one live refresh token (nothing forks);
        - a token two generations old is always reuse: its child was demonstrably used;
        - whoever holds the replaced child presents a spent token after the window and
          ends the session, so a thief who replays a copy is still detected.
        We cannot hand back the child itself: only its hash is stored.
        """
        repository = IdentityRepository(session)
        now = self._clock()
        digest = token_digest(refresh_token)
        # The session's lock first, as every revocation takes it (sessions, then their
        # tokens): spending the token first deadlocks against a concurrent password
        # change or log-out. It also serializes replays of one session, so concurrent
        # retries see each other's work.
        record = await repository.lock_session_of_refresh_token(digest)
        if record is None:
            raise invalid_refresh_token()  # unknown
        spent = await repository.spend_refresh_token(digest, now)
        if spent is not None:
            return await self._continue(session, spent, successor_of=spent.id, now=now)
        presented = await repository.refresh_token(digest)
        if presented is None or presented.revoked_at is not None or presented.rotated_at is None:
            raise invalid_refresh_token()  # revoked, or expired unspent
        if not record.is_active(now):
            raise invalid_refresh_token()
        if now - presented.rotated_at <= self._refresh_grace:
            # Its child, or a sibling issued by an earlier replay of its parent.
            family = (
                [presented.id]
                if presented.parent_id is None
                else [
                    presented.id,
                    presented.parent_id,
                ]
            )
            current = await repository.spend_live_refresh_token(record.id, now, parents=family)
            if current is not None:
                log.info(
                    "spent refresh token replayed within the grace window",
                    extra={"session_id": str(record.id), "user_id": str(record.user_id)},
                )
                return await self._continue(
                    session, current, successor_of=current.parent_id, now=now
                )
        await repository.revoke_sessions(
            record.user_id, now, "refresh_token_reused", only=record.id
        )
        log.warning(
            "refresh token reused; session revoked",
            extra={"session_id": str(record.id), "user_id": str(record.user_id)},
        )
        raise FailAfterCommit(
            Unauthenticated(
                "refresh token was already used; the session has been ended",
                reason="REFRESH_TOKEN_REUSED",
            )
        )

    async def _continue(
        self,
        session: AsyncSession,
        spent: RefreshToken,
        *,
        successor_of: uuid.UUID | None,
        now: datetime.datetime,
    ) -> IssuedTokens:
        """Issues the token that follows `spent`, as a child of `successor_of`."""
        repository = IdentityRepository(session)
        record = await repository.session(spent.session_id)
        if record is None or not record.is_active(now):
            raise invalid_refresh_token()
        user = await repository.live_user(record.user_id)
        if user is None:
            raise invalid_refresh_token()
        expires_at = now + self._session_idle
        await repository.extend_session(record.id, now, expires_at)
        return await self._issue(
            session, user, record.id, parent_id=successor_of, now=now, expires_at=expires_at
        )

    async def log_out(self, session: AsyncSession, refresh_token: str) -> None:
        """Ends the token's session. Unknown or already ended: nothing to do, still OK."""
        repository = IdentityRepository(session)
        presented = await repository.refresh_token(token_digest(refresh_token))
        if presented is None:
            return
        record = await repository.session(presented.session_id)
        if record is not None and record.revoked_at is None:
            await repository.revoke_sessions(
                record.user_id, self._clock(), "log_out", only=record.id
            )

    async def list_sessions(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        page_size: int,
        after: tuple[datetime.datetime, uuid.UUID] | None,
    ) -> SessionPage:
        user = await self.caller(session, principal)
        rows = await IdentityRepository(session).active_sessions(
            user.id, self._clock(), after=after, limit=page_size + 1
        )
        page = rows[:page_size]
        more = len(rows) > page_size
        return SessionPage(
            sessions=page,
            next_after=(page[-1].created_at, page[-1].id) if more and page else None,
        )

    async def revoke_session(
        self, session: AsyncSession, principal: Principal, session_id: uuid.UUID
    ) -> None:
        """Another user's session answers NOT_FOUND, exactly like a missing one."""
        user = await self.caller(session, principal)
        repository = IdentityRepository(session)
        if not await repository.user_owns_session(user.id, session_id):
            raise NotFound("session", str(session_id))
        await repository.revoke_sessions(user.id, self._clock(), "revoked", only=session_id)


class Accounts:
    def __init__(
        self,
        *,
        sessions: Sessions,
        passwords: PasswordHasher,
        throttle: LoginThrottle,
        mailer: Mailer,
        app_url: str,
        email_verification_ttl: datetime.timedelta,
        password_reset_ttl: datetime.timedelta,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._passwords = passwords
        self._throttle = throttle
        self._mailer = mailer
        self._app_url = app_url.rstrip("/")
        self._token_ttl = {
            TokenPurpose.EMAIL_VERIFICATION: email_verification_ttl,
            TokenPurpose.PASSWORD_RESET: password_reset_ttl,
        }
        self._clock = clock

    async def sign_up(
        self,
        session: AsyncSession,
        *,
        email: str,
        username: str,
        password: str,
        display_name: str,
        client: ClientInfo,
    ) -> IssuedTokens:
        check_password_differs(password, "password", email=email, username=username)
        # Hashed before the first statement: no connection is held while argon2 runs.
        password_hash = await self._passwords.hash(password)
        now = self._clock()
        user = await IdentityRepository(session).insert_user(
            user_id=uuid.uuid4(),
            email=email,
            username=username,
            password_hash=password_hash,
            display_name=display_name or username,
            tier_code=FREE_TIER,
            now=now,
        )
        await self._mail_verification(session, user, now)
        return await self._sessions.start(session, user, client)

    async def current_user(self, session: AsyncSession, principal: Principal) -> User:
        return await self._sessions.caller(session, principal)

    async def update_current_user(
        self, session: AsyncSession, principal: Principal, changes: ProfileChanges
    ) -> User:
        """A new email address is unverified until its own verification mail is used; the
        old address is told about the change."""
        user = await self._sessions.caller(session, principal)
        values: dict[str, object] = {}
        if changes.display_name is not None and changes.display_name != user.display_name:
            values["display_name"] = changes.display_name
        if changes.username is not None and changes.username != user.username:
            values["username"] = changes.username
        email_changed = changes.email is not None and changes.email != user.email
        if email_changed:
            values["email"] = changes.email
            values["email_verified_at"] = None
        if not values:
            return user
        now = self._clock()
        repository = IdentityRepository(session)
        updated = await repository.update_user(user.id, values, now)
        if email_changed:
            # Links mailed to the old address (verification, reset) stop working.
            await repository.invalidate_one_time_tokens(
                user.id, [TokenPurpose.EMAIL_VERIFICATION, TokenPurpose.PASSWORD_RESET], now
            )
            await self._mail_verification(session, updated, now)
            await self._mailer.send(
                session,
                MailMessage(
                    to=user.email,
                    subject="Your Pixelshop email address was changed",
                    body=(
                        f"The email address of your Pixelshop account {user.username} was "
                        f"changed to {updated.email}. If you did not do this, reset your "
                        f"password at {self._app_url} right away."
                    ),
                    template="email_changed",
                    user_id=user.id,
                ),
                now,
            )
        return updated

    async def send_verification_email(self, session: AsyncSession, principal: Principal) -> None:
        user = await self._sessions.caller(session, principal)
        if user.email_verified_at is not None:
            raise FailedPrecondition(
                "the email address is already verified", reason="EMAIL_ALREADY_VERIFIED"
            )
        await self._mail_verification(session, user, self._clock())

    async def verify_email(self, session: AsyncSession, token: str) -> User:
        repository = IdentityRepository(session)
        now = self._clock()
        used = await repository.use_one_time_token(
            token_digest(token), TokenPurpose.EMAIL_VERIFICATION, now
        )
        if used is None:
            raise invalid_one_time_token()
        # Proves the address it was mailed to, so it is void once the address changed.
        user = await repository.verify_email(used.user_id, used.email, now)
        if user is None:
            raise invalid_one_time_token()
        return user

    async def request_password_reset(self, session: AsyncSession, email: str) -> None:
        """Mails a reset link when the account exists; the caller cannot tell either way."""
        repository = IdentityRepository(session)
        user = await repository.live_user_by_email(email)
        if user is None:
            return
        now = self._clock()
        token = await self._issue_one_time_token(repository, user, TokenPurpose.PASSWORD_RESET, now)
        await self._mailer.send(
            session,
            MailMessage(
                to=user.email,
                subject="Reset your Pixelshop password",
                body=(
                    f"Someone asked to reset the password of your Pixelshop account "
                    f"{user.username}. To choose a new one, open\n\n"
                    f"{self._app_url}/reset-password?token={token}\n\n"
                    f"The link works once and expires in "
                    f"{_describe(self._token_ttl[TokenPurpose.PASSWORD_RESET])}. "
                    f"If it was not you, ignore this mail."
                ),
                template=TokenPurpose.PASSWORD_RESET.value,
                user_id=user.id,
            ),
            now,
        )

    async def reset_password(self, session: AsyncSession, token: str, new_password: str) -> None:
        """Sets the password and ends every session (whoever knew the old one is out)."""
        password_hash = await self._passwords.hash(new_password)  # before any statement
        repository = IdentityRepository(session)
        now = self._clock()
        used = await repository.use_one_time_token(
            token_digest(token), TokenPurpose.PASSWORD_RESET, now
        )
        if used is None:
            raise invalid_one_time_token()
        # Throttle rows before the user's row, the order every password check takes.
        await self._throttle.forgive_account(repository, f"user:{used.user_id}")
        user = await repository.live_user(used.user_id, for_update=True)
        # A link mailed to an address the account no longer has is void (an address
        # change racing the reset request can miss invalidating it).
        if user is None or user.email != used.email:
            raise invalid_one_time_token()
        check_password_differs(
            new_password, "new_password", email=user.email, username=user.username
        )
        await repository.update_user(user.id, {"password_hash": password_hash}, now)
        await repository.invalidate_one_time_tokens(user.id, [TokenPurpose.PASSWORD_RESET], now)
        await repository.revoke_sessions(user.id, now, "password_reset")
        # The link reached this mailbox: that proves the address as well.
        await repository.verify_email(user.id, used.email, now)

    async def change_password(
        self,
        transactions: Transactions,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        client: ClientInfo,
    ) -> None:
        """Needs the current password (throttled like a log-in); ends every other session."""
        async with transactions() as session:
            user = await self._sessions.caller(session, principal)
            check_password_differs(
                new_password, "new_password", email=user.email, username=user.username
            )
            reservation = await self._sessions.reserve_attempt(
                session, account=f"user:{user.id}", client=client
            )
        if not await self._passwords.verify(user.password_hash, current_password):
            raise wrong_password("current_password")
        password_hash = await self._passwords.hash(new_password)
        async with transactions() as session:
            repository = IdentityRepository(session)
            await self._sessions.caller(session, principal)
            now = self._clock()
            await self._throttle.refund(repository, reservation)
            # Locked, so a reset or another change in flight cannot be silently undone.
            current = await repository.live_user(user.id, for_update=True)
            if current is None or current.password_hash != user.password_hash:
                raise Aborted("the password was changed meanwhile; try again")
            await repository.update_user(user.id, {"password_hash": password_hash}, now)
            await repository.invalidate_one_time_tokens(user.id, [TokenPurpose.PASSWORD_RESET], now)
            await repository.revoke_sessions(
                user.id, now, "password_changed", keep=principal.session_id
            )

    async def delete_current_user(
        self,
        transactions: Transactions,
        principal: Principal,
        *,
        password: str,
        client: ClientInfo,
    ) -> None:
        """Soft-deletes and scrubs the account, removes its sessions and tokens, and
        tells the other services (`user.deleted` in the outbox) to purge its data."""
        async with transactions() as session:
            user = await self._sessions.caller(session, principal)
            reservation = await self._sessions.reserve_attempt(
                session, account=f"user:{user.id}", client=client
            )
        if not await self._passwords.verify(user.password_hash, password):
            raise wrong_password("password")
        async with transactions() as session:
            repository = IdentityRepository(session)
            await self._sessions.caller(session, principal)
            now = self._clock()
            await self._throttle.refund(repository, reservation)
            await repository.delete_user_sessions(user.id)
            await repository.delete_user_one_time_tokens(user.id)
            if not await repository.scrub_user(user.id, now):
                raise NotFound("user", str(user.id))
            await repository.append_event(
                event_type=USER_DELETED_EVENT,
                user_id=user.id,
                payload={"user_id": str(user.id), "deleted_at": now.isoformat()},
                now=now,
            )
        log.info("account deleted", extra={"user_id": str(user.id)})

    async def _issue_one_time_token(
        self,
        repository: IdentityRepository,
        user: User,
        purpose: TokenPurpose,
        now: datetime.datetime,
    ) -> str:
        """A new single-use token; earlier unused ones of the same purpose stop working."""
        await repository.invalidate_one_time_tokens(user.id, [purpose], now)
        token = new_opaque_token()
        await repository.insert_one_time_token(
            token_hash=token_digest(token),
            user_id=user.id,
            purpose=purpose,
            email=user.email,
            now=now,
            expires_at=now + self._token_ttl[purpose],
        )
        return token

    async def _mail_verification(
        self, session: AsyncSession, user: User, now: datetime.datetime
    ) -> None:
        repository = IdentityRepository(session)
        token = await self._issue_one_time_token(
            repository, user, TokenPurpose.EMAIL_VERIFICATION, now
        )
        await self._mailer.send(
            session,
            MailMessage(
                to=user.email,
                subject="Verify your Pixelshop email address",
                body=(
                    f"Welcome to Pixelshop, {user.display_name}. To confirm that "
                    f"{user.email} is yours, open\n\n"
                    f"{self._app_url}/verify-email?token={token}\n\n"
                    f"The link works once and expires in "
                    f"{_describe(self._token_ttl[TokenPurpose.EMAIL_VERIFICATION])}."
                ),
                template=TokenPurpose.EMAIL_VERIFICATION.value,
                user_id=user.id,
            ),
            now,
        )


class Tiers:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock

    async def list_tiers(self, session: AsyncSession) -> list[Tier]:
        return await IdentityRepository(session).list_tiers()

    async def user_tier(self, session: AsyncSession, user_id: uuid.UUID) -> Tier:
        repository = IdentityRepository(session)
        user = await repository.live_user(user_id)
        if user is None:
            raise NotFound("user", str(user_id))
        tier = await repository.tier(user.tier_code)
        assert tier is not None  # users.tier_code is a foreign key
        return tier

    async def set_user_tier(
        self, session: AsyncSession, user_id: uuid.UUID, tier_code: str
    ) -> User:
        """Idempotent: setting the tier a user already has changes nothing and emits no
        event (billing may deliver the same subscription change more than once)."""
        repository = IdentityRepository(session)
        if await repository.tier(tier_code) is None:
            raise NotFound("tier", tier_code)
        user = await repository.live_user(user_id, for_update=True)
        if user is None:
            raise NotFound("user", str(user_id))
        if user.tier_code == tier_code:
            return user
        now = self._clock()
        updated = await repository.update_user(user.id, {"tier_code": tier_code}, now)
        await repository.append_event(
            event_type=USER_TIER_CHANGED_EVENT,
            user_id=user.id,
            payload={"user_id": str(user.id), "from": user.tier_code, "to": tier_code},
            now=now,
        )
        return updated

    async def set_tier_by_login(self, session: AsyncSession, login: str, tier_code: str) -> User:
        """For the CLI: `login` is an email address or a username, in any case or form."""
        user = await find_user_by_login(IdentityRepository(session), normalize_identifier(login))
        if user is None:
            raise NotFound("user", login)
        return await self.set_user_tier(session, user.id, tier_code)


def _describe(duration: datetime.timedelta) -> str:
    hours, seconds = divmod(int(duration.total_seconds()), 3600)
    if hours and not seconds:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, round(duration.total_seconds() / 60))
    return f"{minutes} minutes"


class Housekeeping:
    """Periodic upkeep, safe to run on every replica at once: rotates the signing key
    when it is due, erases retired private keys, deletes rows nothing can use any more."""

    # Expired sessions and one-time tokens are kept a day, for support questions.
    RETENTION = datetime.timedelta(days=1)

    def __init__(self, *, keys: SigningKeys, throttle: LoginThrottle, clock: Clock) -> None:
        self._keys = keys
        self._throttle = throttle
        self._clock = clock

    async def rotate_keys(self, session: AsyncSession) -> None:
        rotated = await self._keys.rotate_if_due(session)
        if rotated is not None:
            log.info(
                "signing key rotated",
                extra={"kid": str(rotated.kid), "activates": rotated.activated_at.isoformat()},
            )
        await self._keys.erase_retired_private_keys(session)

    async def sweep(self, session: AsyncSession) -> dict[str, int]:
        now = self._clock()
        return await IdentityRepository(session).sweep(
            sessions_expired_before=now - self.RETENTION,
            one_time_tokens_expired_before=now - self.RETENTION,
            login_failures_before=now - self._throttle.longest_window,
        )
