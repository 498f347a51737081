"""Identity's business rules, on plain values; no gRPC, no protobuf, no commits.

- `Sessions`: log-in, refresh-token rotation, log-out, the caller's sessions.
- `Accounts`: sign-up, profile, e-mail verification, passwords, account deletion.
- `MailDesk`: what a deferred mail request becomes (recipient, token, rate limits).
- `Tiers`: plans, users' tiers (set by billing) and the outbox other services read.
- `Housekeeping`: key rotation by age and sweeping what has expired.

Every method takes the unit of work's `AsyncSession` (ADR 0011). Operations that check
or hash a password (sign-up, log-in, change password, delete account) are workflows in
workflows.py: they call the `begin_*`/`finish_*`/`record_*` steps here in two short
transactions, with the deliberately slow argon2 work between them.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import unicodedata
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import Clock
from runtime.context import Principal
from runtime.db import FailAfterCommit
from runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from runtime.events import TIER_SET_BY_OPERATOR
from services.identity.errors import (
    invalid_login,
    invalid_one_time_token,
    invalid_refresh_token,
)
from services.identity.keys import SigningKeys
from services.identity.mail import MailMessage
from services.identity.models import (
    FREE_TIER,
    MailPurpose,
    MailRequest,
    RefreshToken,
    Session,
    Tier,
    TokenPurpose,
    User,
)
from services.identity.passwords import PasswordHasher
from services.identity.repository import IdentityRepository
from services.identity.skeleton import skeleton
from services.identity.throttle import LoginThrottle, Reservation
from services.identity.tokens import AccessTokenIssuer, new_opaque_token, token_digest

log = logging.getLogger("pixelshop.identity")

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


def check_password_differs(
    password: str, field: str, *, email: str | None, username: str, pending: str | None = None
) -> None:
    if normalize_identifier(password) in {email, username, pending} - {None}:
        raise InvalidArgument(field, "must not be the account's email or username")


async def find_user_by_login(repository: IdentityRepository, login: str) -> User | None:
    """An email address when it has an '@' (usernames cannot), else a username."""
    if "@" in login:
        return await repository.live_user_by_email(login)
    return await repository.live_user_by_username(login)


async def log_in_candidates(repository: IdentityRepository, login: str) -> list[User | None]:
    """Whose password a log-in checks. By username: that account. By address: its owner
    and the newest account that asked for the address and has not confirmed it (a
    sign-up with an address that was taken logs in like any other, ADR 0013); always
    two slots, so that both cost the same argon2 work whether they exist or not."""
    if "@" not in login:
        return [await repository.live_user_by_username(login)]
    owner = await repository.live_user_by_email(login)
    pending = await repository.newest_live_user_by_pending_email(login)
    if pending is not None and owner is not None and pending.id == owner.id:
        pending = None
    return [owner, pending]


def mail_subject(kind: str, value: str) -> bytes:
    """What the mail rate limit counts: an address or a user id, hashed."""
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()


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
class PasswordCheck:
    """What the first step of a password-checking workflow found and counted."""

    candidates: list[User | None]
    reservation: Reservation


@dataclass(frozen=True)
class ProfileChanges:
    """Fields to change; None leaves a field as it is. Values are already normalized."""

    display_name: str | None = None
    username: str | None = None
    email: str | None = None


def asks_new_address(user: User, email: str | None) -> bool:
    """Whether a profile change asks for an address the account neither has nor has
    already asked for: such a change records a pending address and mails it a link, so
    it needs the current password (a stolen access token must not move the account to
    its thief's mailbox). Asking for the current address back cancels and needs none."""
    return email is not None and email not in (user.email, user.pending_email)


def password_required(field: str) -> InvalidArgument:
    return InvalidArgument(field, "is required to change the email address")


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

    async def begin_log_in(
        self, session: AsyncSession, login: str, client: ClientInfo
    ) -> PasswordCheck:
        """Step 1 of a log-in: whose password to check, and the attempt counted against
        the account (or the unknown login) and the address. Unknown accounts are counted
        and later checked against a dummy hash exactly like known ones."""
        repository = IdentityRepository(session)
        candidates = await log_in_candidates(repository, login)
        known = next((user for user in candidates if user is not None), None)
        reservation = await self.reserve_attempt(
            session, account=f"user:{known.id}" if known else f"login:{login}", client=client
        )
        return PasswordCheck(candidates, reservation)

    async def finish_log_in(
        self,
        session: AsyncSession,
        user: User,
        reservation: Reservation,
        client: ClientInfo,
        *,
        upgraded_hash: str | None,
    ) -> IssuedTokens:
        """Step 2, after the password matched `user`'s hash: a new session."""
        repository = IdentityRepository(session)
        await self._throttle.refund(repository, reservation)
        # Locked (after the throttle rows: the order every password check takes), so a
        # reset or password change in flight finishes first and then refuses this log-in;
        # read unlocked, its "end every session" would miss this one.
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
        throttle: LoginThrottle,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._throttle = throttle
        self._clock = clock

    async def record_sign_up(
        self,
        session: AsyncSession,
        *,
        email: str,
        username: str,
        password_hash: str,
        display_name: str,
        client: ClientInfo,
    ) -> IssuedTokens:
        """The sign-up's one transaction (the password was hashed before it). An address
        another account has is not refused, which would tell anyone it is registered: the
        account is created with the address pending, and the worker mails its owner
        instead of a verification link (ADR 0013)."""
        repository = IdentityRepository(session)
        now = self._clock()
        user_id = uuid.uuid4()

        async def insert(address: str | None, pending: str | None) -> User:
            return await repository.insert_user(
                user_id=user_id,
                email=address,
                pending_email=pending,
                username=username,
                username_skeleton=skeleton(username),
                password_hash=password_hash,
                display_name=display_name or username,
                tier_code=FREE_TIER,
                now=now,
            )

        user: User | None = None
        if not await repository.email_is_taken(email):
            try:
                async with session.begin_nested():  # a savepoint: a lost race rolls back alone
                    user = await insert(email, None)
            except AlreadyExists as error:
                if error.metadata.get("field") != "email":
                    raise
        if user is None:
            user = await insert(None, email)
        await repository.insert_mail_request(
            purpose=MailPurpose.EMAIL_VERIFICATION, address=None, user_id=user.id, now=now
        )
        return await self._sessions.start(session, user, client)

    async def current_user(self, session: AsyncSession, principal: Principal) -> User:
        return await self._sessions.caller(session, principal)

    async def update_current_user(
        self,
        session: AsyncSession,
        principal: Principal,
        changes: ProfileChanges,
        *,
        reauthenticated: bool = False,
    ) -> User:
        """A new address is pending until its link is used (it may belong to someone
        else, which the answer must not reveal, ADR 0013); asking for the current
        address again cancels a pending change. A new address needs `reauthenticated`
        (the current password checked: `AccountWorkflows.update_profile`)."""
        user = await self._sessions.caller(session, principal)
        if asks_new_address(user, changes.email) and not reauthenticated:
            raise password_required("current_password")
        values: dict[str, object] = {}
        if changes.display_name is not None and changes.display_name != user.display_name:
            values["display_name"] = changes.display_name
        if changes.username is not None and changes.username != user.username:
            values["username"] = changes.username
            values["username_skeleton"] = skeleton(changes.username)
        if changes.email is not None and changes.email != user.pending_email:
            values["pending_email"] = None if changes.email == user.email else changes.email
        if not values:
            return user
        now = self._clock()
        repository = IdentityRepository(session)
        updated = await repository.update_user(user.id, values, now)
        if "pending_email" in values:
            # A link for an address no longer asked for stops working.
            await repository.invalidate_one_time_tokens(user.id, [TokenPurpose.EMAIL_CHANGE], now)
        if asks_new_address(user, changes.email):
            await repository.insert_mail_request(
                purpose=MailPurpose.EMAIL_CHANGE,
                address=updated.pending_email,
                user_id=user.id,
                now=now,
            )
        return updated

    async def send_verification_email(self, session: AsyncSession, principal: Principal) -> None:
        user = await self._sessions.caller(session, principal)
        if user.verified:
            raise FailedPrecondition(
                "the email address is already verified", reason="EMAIL_ALREADY_VERIFIED"
            )
        await IdentityRepository(session).insert_mail_request(
            purpose=MailPurpose.EMAIL_VERIFICATION,
            address=None,
            user_id=user.id,
            now=self._clock(),
        )

    async def verify_email(self, session: AsyncSession, token: str) -> User:
        """A verification link proves the account's address; an e-mail change link moves
        the account to the address it was mailed to (and the old address is told)."""
        repository = IdentityRepository(session)
        now = self._clock()
        digest = token_digest(token)
        used = await repository.use_one_time_token(digest, TokenPurpose.EMAIL_VERIFICATION, now)
        if used is not None:
            # Proves the address it was mailed to, so it is void once the address changed.
            user = await repository.verify_email(used.user_id, used.email, now)
            if user is None:
                raise invalid_one_time_token()
            return user
        used = await repository.use_one_time_token(digest, TokenPurpose.EMAIL_CHANGE, now)
        if used is None:
            raise invalid_one_time_token()
        before = await repository.live_user(used.user_id, for_update=True)
        if before is None:
            raise invalid_one_time_token()
        try:
            moved = await repository.confirm_pending_email(used.user_id, used.email, now)
        except AlreadyExists:
            raise invalid_one_time_token() from None  # taken since the link was mailed
        if moved is None:
            raise invalid_one_time_token()  # another address was asked for since
        # Links mailed to the old address (verification, reset) stop working.
        await repository.invalidate_one_time_tokens(
            moved.id, [TokenPurpose.EMAIL_VERIFICATION, TokenPurpose.PASSWORD_RESET], now
        )
        if before.email is not None:
            await repository.insert_mail_request(
                purpose=MailPurpose.EMAIL_CHANGED, address=before.email, user_id=moved.id, now=now
            )
        return moved

    async def request_password_reset(self, session: AsyncSession, email: str) -> None:
        """Only records the request: the same statement whether or not the address is
        registered, so neither the answer nor its time tells (the worker resolves it)."""
        await IdentityRepository(session).insert_mail_request(
            purpose=MailPurpose.PASSWORD_RESET, address=email, user_id=None, now=self._clock()
        )

    async def reset_password(
        self, session: AsyncSession, token: str, new_password: str, password_hash: str
    ) -> None:
        """Sets the password and ends every session (whoever knew the old one is out).
        `password_hash` is `new_password` hashed before the transaction began."""
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

    async def begin_password_check(
        self,
        session: AsyncSession,
        principal: Principal,
        client: ClientInfo,
        *,
        new_password: str | None = None,
    ) -> tuple[User, Reservation]:
        """Step 1 of change password and delete account: the caller, and the attempt
        counted like a log-in (so re-authentication cannot be used to guess)."""
        user = await self._sessions.caller(session, principal)
        if new_password is not None:
            check_password_differs(
                new_password,
                "new_password",
                email=user.email,
                username=user.username,
                pending=user.pending_email,
            )
        reservation = await self._sessions.reserve_attempt(
            session, account=f"user:{user.id}", client=client
        )
        return user, reservation

    async def finish_change_password(
        self,
        session: AsyncSession,
        principal: Principal,
        user: User,
        reservation: Reservation,
        password_hash: str,
    ) -> None:
        """Step 2, after the current password matched: ends every other session."""
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

    async def finish_profile_update(
        self,
        session: AsyncSession,
        principal: Principal,
        user: User,
        reservation: Reservation,
        changes: ProfileChanges,
    ) -> User:
        """Step 2 of an address change, after the current password matched: the attempt
        refunded, then the change. A change refused now (a username taken meanwhile)
        keeps the refund: the password was right (`FailAfterCommit`)."""
        repository = IdentityRepository(session)
        await self._sessions.caller(session, principal)
        await self._throttle.refund(repository, reservation)
        # Locked, so a password change or reset in flight finishes first; the password
        # we checked must still be the account's.
        current = await repository.live_user(user.id, for_update=True)
        if current is None or current.password_hash != user.password_hash:
            raise Aborted("the password was changed meanwhile; try again")
        try:
            async with session.begin_nested():
                return await self.update_current_user(
                    session, principal, changes, reauthenticated=True
                )
        except DomainError as error:
            raise FailAfterCommit(error) from None

    async def finish_delete(
        self,
        session: AsyncSession,
        principal: Principal,
        user: User,
        reservation: Reservation,
    ) -> None:
        """Step 2 of account deletion, after the password matched: soft-deletes and
        scrubs the account, removes its sessions, tokens, pending mail and mail counters,
        and tells the other services (`user.deleted` in the outbox) to purge its data."""
        repository = IdentityRepository(session)
        await self._sessions.caller(session, principal)
        now = self._clock()
        await self._throttle.refund(repository, reservation)
        # The user's row before its tokens and mail requests: the mail worker takes them in
        # this order too, so a mail composed meanwhile either sees the account gone or has
        # its token deleted here.
        if await repository.live_user(user.id, for_update=True) is None:
            raise NotFound("user", str(user.id))
        await repository.delete_user_sessions(user.id)
        await repository.delete_user_one_time_tokens(user.id)
        addresses = [address for address in (user.email, user.pending_email) if address]
        await repository.delete_user_mail_requests(user.id, addresses)
        await repository.forget_mail_sends(
            [mail_subject("user", str(user.id))]
            + [mail_subject("address", address) for address in addresses]
        )
        if not await repository.scrub_user(user.id, now):
            raise NotFound("user", str(user.id))
        await repository.append_event(
            event_type=USER_DELETED_EVENT,
            user_id=user.id,
            payload={"user_id": str(user.id), "deleted_at": now.isoformat()},
            now=now,
        )
        log.info("account deleted", extra={"user_id": str(user.id)})


@dataclass(frozen=True)
class MailLimits:
    """Per address and per user: at most `per_cooldown` mails of one kind within
    `cooldown`, and `daily_cap` mails of every kind within a day."""

    cooldown: datetime.timedelta
    per_cooldown: int
    daily_cap: int

    DAY = datetime.timedelta(days=1)


class MailDesk:
    """Turns one deferred mail request into a message, or into nothing: an unknown
    address, a request that no longer applies, or one over the rate limit.

    `compose` runs in the mail worker's transaction; the message it answers carries a
    new one-time token (earlier ones of its kind stop working) and is sent after the
    commit. Retried after a crash, it composes again with a fresh token."""

    def __init__(
        self,
        *,
        app_url: str,
        email_verification_ttl: datetime.timedelta,
        email_change_ttl: datetime.timedelta,
        password_reset_ttl: datetime.timedelta,
        limits: MailLimits,
        clock: Clock,
    ) -> None:
        self._app_url = app_url.rstrip("/")
        self._token_ttl = {
            TokenPurpose.EMAIL_VERIFICATION: email_verification_ttl,
            TokenPurpose.EMAIL_CHANGE: email_change_ttl,
            TokenPurpose.PASSWORD_RESET: password_reset_ttl,
        }
        self._limits = limits
        self._clock = clock

    async def compose(self, session: AsyncSession, request: MailRequest) -> MailMessage | None:
        repository = IdentityRepository(session)
        now = self._clock()
        # Locked: an account deletion in flight finishes first (and then nothing is sent),
        # or waits until this mail's token exists, and deletes it.
        user = (
            await repository.live_user(request.user_id, for_update=True)
            if request.user_id
            else None
        )
        if request.purpose is MailPurpose.PASSWORD_RESET:
            assert request.address is not None
            found = await repository.live_user_by_email(request.address)
            owner = await repository.live_user(found.id, for_update=True) if found else None
            if owner is None or owner.email != request.address:
                return None  # unknown address: nothing to send, nobody told
            return await self._with_token(
                repository, request, owner, owner.email or "", TokenPurpose.PASSWORD_RESET, now
            )
        if user is None:
            return None  # deleted since
        if request.purpose is MailPurpose.EMAIL_CHANGED:
            assert request.address is not None
            return await self._limited(
                repository,
                request,
                MailMessage(
                    to=request.address,
                    subject="Your Pixelshop email address was changed",
                    body=(
                        f"The email address of your Pixelshop account {user.username} was "
                        f"changed to another one. If you did not do this, reset your "
                        f"password at {self._app_url} right away."
                    ),
                    template="email_changed",
                    message_id=request.id,
                ),
                user,
                now,
            )
        address = (
            request.address
            if request.purpose is MailPurpose.EMAIL_CHANGE
            else user.pending_email or user.email
        )
        if address is None:
            return None
        if address == user.email:
            if user.email_verified_at is not None:
                return None  # verified meanwhile
            return await self._with_token(
                repository, request, user, address, TokenPurpose.EMAIL_VERIFICATION, now
            )
        if address != user.pending_email:
            return None  # another address was asked for since
        owner = await repository.live_user_by_email(address)
        if owner is not None and owner.id != user.id:
            # The address is registered: its owner hears about it, the asker learns nothing.
            return await self._limited(
                repository,
                request,
                MailMessage(
                    to=address,
                    subject="Someone tried to use your email address at Pixelshop",
                    body=(
                        f"Someone asked to use {address} for another Pixelshop account. "
                        f"This address already belongs to your account; nothing was "
                        f"changed. If it was you, log in or reset your password at "
                        f"{self._app_url}. If not, you can ignore this mail."
                    ),
                    template="address_in_use",
                    message_id=request.id,
                ),
                owner,
                now,
            )
        return await self._with_token(
            repository, request, user, address, TokenPurpose.EMAIL_CHANGE, now
        )

    async def _with_token(
        self,
        repository: IdentityRepository,
        request: MailRequest,
        user: User,
        address: str,
        purpose: TokenPurpose,
        now: datetime.datetime,
    ) -> MailMessage | None:
        texts = {
            TokenPurpose.PASSWORD_RESET: (
                "Reset your Pixelshop password",
                f"Someone asked to reset the password of your Pixelshop account "
                f"{user.username}. To choose a new one, open\n\n{{link}}\n\n"
                f"The link works once and expires in {{ttl}}. If it was not you, ignore "
                f"this mail.",
                "reset-password",
            ),
            TokenPurpose.EMAIL_VERIFICATION: (
                "Verify your Pixelshop email address",
                f"Welcome to Pixelshop, {user.display_name}. To confirm that {address} is "
                f"yours, open\n\n{{link}}\n\nThe link works once and expires in {{ttl}}.",
                "verify-email",
            ),
            TokenPurpose.EMAIL_CHANGE: (
                "Confirm your new Pixelshop email address",
                f"To use {address} for your Pixelshop account {user.username}, open\n\n"
                f"{{link}}\n\nThe link works once and expires in {{ttl}}. Until then the "
                f"account keeps its current address.",
                "verify-email",
            ),
        }
        subject, body, path = texts[purpose]
        # Counted before the token exists: a mail over the limit issues no token.
        if not await self._within_limits(repository, request, address, user, purpose.value, now):
            return None
        await repository.invalidate_one_time_tokens(user.id, [purpose], now)
        token = new_opaque_token()
        await repository.insert_one_time_token(
            token_hash=token_digest(token),
            user_id=user.id,
            purpose=purpose,
            email=address,
            now=now,
            expires_at=now + self._token_ttl[purpose],
        )
        link = f"{self._app_url}/{path}?token={token}"
        return MailMessage(
            to=address,
            subject=subject,
            body=body.format(link=link, ttl=_describe(self._token_ttl[purpose])),
            template=purpose.value,
            message_id=request.id,
        )

    async def _limited(
        self,
        repository: IdentityRepository,
        request: MailRequest,
        message: MailMessage,
        user: User,
        now: datetime.datetime,
    ) -> MailMessage | None:
        if not await self._within_limits(
            repository, request, message.to, user, message.template, now
        ):
            return None
        return message

    async def _within_limits(
        self,
        repository: IdentityRepository,
        request: MailRequest,
        address: str,
        user: User,
        template: str,
        now: datetime.datetime,
    ) -> bool:
        """Counts this mail for its address and its user, unless either is over the
        cooldown (mails of this kind) or the daily cap (mails of every kind). Each subject
        is locked for the decision, so two workers never both send the last allowed mail."""
        subjects = sorted({mail_subject("address", address), mail_subject("user", str(user.id))})
        for subject in subjects:
            await repository.lock_mail_subject(subject)
        for subject in subjects:
            recent = await repository.mails_sent_since(
                subject, now - self._limits.cooldown, template=template
            )
            today = await repository.mails_sent_since(subject, now - MailLimits.DAY)
            if recent >= self._limits.per_cooldown or today >= self._limits.daily_cap:
                log.info(
                    "mail not sent: rate limited",
                    extra={"purpose": request.purpose.value, "request_id": str(request.id)},
                )
                return False
        await repository.record_mail_sent(subjects, template, now)
        return True


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
        self, session: AsyncSession, user_id: uuid.UUID, tier_code: str, *, set_by: str
    ) -> User:
        """Idempotent: setting the tier a user already has changes nothing and emits no
        event (billing may deliver the same subscription change more than once). The
        `user.tier_changed` event says who set it (`set_by`): the service that asked, or
        `TIER_SET_BY_OPERATOR` for the `set-tier` command."""
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
            payload={
                "user_id": str(user.id),
                "from": user.tier_code,
                "to": tier_code,
                "set_by": set_by,
            },
            now=now,
        )
        return updated

    async def set_tier_by_login(self, session: AsyncSession, login: str, tier_code: str) -> User:
        """For the `set-tier` command: `login` is an email address or a username, in any
        case or form. Billing learns of it from the event alone (ADR 0021)."""
        user = await find_user_by_login(IdentityRepository(session), normalize_identifier(login))
        if user is None:
            raise NotFound("user", login)
        return await self.set_user_tier(session, user.id, tier_code, set_by=TIER_SET_BY_OPERATOR)


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
            mail_sends_before=now - MailLimits.DAY,
        )
