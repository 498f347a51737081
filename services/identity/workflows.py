"""identity's workflows (ADR 0011): the operations whose work must not sit inside a
transaction, written as committed steps with `checkpoint(...)` between them.

- `AccountWorkflows`: sign-up and password reset (argon2 hashes the password, then one
  transaction records it), log-in, change password, an e-mail address change and delete
  account (a short transaction counts the attempt, argon2 checks the password with none
  open, a second short transaction records the outcome). A crash between the steps
  leaves at most a counted attempt, which expires like any failed one; the caller's
  retry runs through.
- `MailWorkflow`: the worker that turns `mail_requests` rows into mail. It claims a batch
  (`FOR UPDATE SKIP LOCKED`, the claim committed before anything is sent), composes each
  message in its own transaction (resolving the address, the rate limits, the one-time
  token), sends it with no transaction open, and then deletes the row. A worker that dies
  leaves its claimed rows to be taken up again once the claim lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging

from runtime.clock import Clock
from runtime.context import Principal
from runtime.db import Database
from runtime.periodic import every
from runtime.workflow import checkpoint
from services.identity.errors import invalid_login, wrong_password
from services.identity.mail import Mailer
from services.identity.models import MailRequest, User
from services.identity.passwords import PasswordHasher
from services.identity.repository import IdentityRepository
from services.identity.service import (
    Accounts,
    ClientInfo,
    IssuedTokens,
    MailDesk,
    ProfileChanges,
    Sessions,
    asks_new_address,
    check_password_differs,
    password_required,
)

log = logging.getLogger("pixelshop.identity.workflows")


class AccountWorkflows:
    def __init__(
        self,
        *,
        database: Database,
        accounts: Accounts,
        sessions: Sessions,
        passwords: PasswordHasher,
        on_mail_requested: MailWakeUp | None = None,
    ) -> None:
        self._database = database
        self._accounts = accounts
        self._sessions = sessions
        self._passwords = passwords
        self._on_mail_requested = on_mail_requested

    def _mail_requested(self) -> None:
        if self._on_mail_requested is not None:
            self._on_mail_requested()

    async def sign_up(
        self,
        *,
        email: str,
        username: str,
        password: str,
        display_name: str,
        client: ClientInfo,
    ) -> IssuedTokens:
        check_password_differs(password, "password", email=email, username=username)
        password_hash = await self._passwords.hash(password)
        await checkpoint("sign_up.password_hashed")
        async with self._database.transaction() as session:
            issued = await self._accounts.record_sign_up(
                session,
                email=email,
                username=username,
                password_hash=password_hash,
                display_name=display_name,
                client=client,
            )
        await checkpoint("sign_up.recorded")
        self._mail_requested()
        return issued

    async def reset_password(self, token: str, new_password: str) -> None:
        password_hash = await self._passwords.hash(new_password)
        await checkpoint("reset_password.password_hashed")
        async with self._database.transaction() as session:
            await self._accounts.reset_password(session, token, new_password, password_hash)

    async def log_in(self, login: str, password: str, client: ClientInfo) -> IssuedTokens:
        """`login` is a normalized email or username. Unknown accounts are counted and
        checked (against a dummy hash) exactly like known ones: same error, same time."""
        async with self._database.transaction() as session:
            check = await self._sessions.begin_log_in(session, login, client)
        await checkpoint("log_in.attempt_counted")
        # Outside any transaction: argon2 is slow on purpose. Every slot costs one check.
        matched: User | None = None
        for candidate in check.candidates:
            hash_ = candidate.password_hash if candidate else None
            if await self._passwords.verify_or_dummy(hash_, password) and matched is None:
                matched = candidate
        if matched is None:
            raise invalid_login()
        upgraded_hash = (
            await self._passwords.hash(password)
            if self._passwords.needs_rehash(matched.password_hash)
            else None
        )
        await checkpoint("log_in.password_checked")
        async with self._database.transaction() as session:
            issued = await self._sessions.finish_log_in(
                session, matched, check.reservation, client, upgraded_hash=upgraded_hash
            )
        await checkpoint("log_in.session_started")
        return issued

    async def change_password(
        self,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        client: ClientInfo,
    ) -> None:
        """Needs the current password (throttled like a log-in); ends every other session."""
        async with self._database.transaction() as session:
            user, reservation = await self._accounts.begin_password_check(
                session, principal, client, new_password=new_password
            )
        await checkpoint("change_password.attempt_counted")
        if not await self._passwords.verify(user.password_hash, current_password):
            raise wrong_password("current_password")
        password_hash = await self._passwords.hash(new_password)
        await checkpoint("change_password.password_checked")
        async with self._database.transaction() as session:
            await self._accounts.finish_change_password(
                session, principal, user, reservation, password_hash
            )
        await checkpoint("change_password.changed")

    async def update_profile(
        self,
        principal: Principal,
        changes: ProfileChanges,
        *,
        current_password: str | None,
        client: ClientInfo,
    ) -> User:
        """A change that asks for a new address needs the current password, checked like
        ChangePassword's (counted per account and address, argon2 with no transaction
        open, then refunded): whoever holds a stolen access token must not move the
        account to a mailbox they read and reset the password through it. Any other
        change (display name, username, cancelling a pending address) is one unit of work.
        The check comes before the address is looked at, so no answer tells whether it is
        registered (ADR 0013)."""
        async with self._database.transaction() as session:
            user = await self._accounts.current_user(session, principal)
            if not asks_new_address(user, changes.email):
                return await self._accounts.update_current_user(session, principal, changes)
            if current_password is None:
                raise password_required("current_password")
            user, reservation = await self._accounts.begin_password_check(
                session, principal, client
            )
        await checkpoint("update_profile.attempt_counted")
        if not await self._passwords.verify(user.password_hash, current_password):
            raise wrong_password("current_password")
        await checkpoint("update_profile.password_checked")
        # A change refused now keeps the refund: it commits, then fails (FailAfterCommit).
        async with self._database.transaction() as session:
            updated = await self._accounts.finish_profile_update(
                session, principal, user, reservation, changes
            )
        await checkpoint("update_profile.updated")
        self._mail_requested()
        return updated

    async def delete_account(
        self, principal: Principal, *, password: str, client: ClientInfo
    ) -> None:
        async with self._database.transaction() as session:
            user, reservation = await self._accounts.begin_password_check(
                session, principal, client
            )
        await checkpoint("delete_account.attempt_counted")
        if not await self._passwords.verify(user.password_hash, password):
            raise wrong_password("password")
        await checkpoint("delete_account.password_checked")
        async with self._database.transaction() as session:
            await self._accounts.finish_delete(session, principal, user, reservation)
        await checkpoint("delete_account.deleted")


class MailWakeUp:
    """Lets a request tell this replica's mail worker that a row is waiting."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class MailWorkflow:
    BATCH = 50
    # A request still failing after this many claims (a mailer down for a long time) is
    # dropped and logged: its links would have expired anyway.
    MAX_ATTEMPTS = 10

    def __init__(
        self,
        *,
        database: Database,
        desk: MailDesk,
        mailer: Mailer,
        claim: datetime.timedelta,
        poll_seconds: float,
        clock: Clock,
        wake_up: MailWakeUp | None = None,
    ) -> None:
        self._database = database
        self._desk = desk
        self._mailer = mailer
        self._claim = claim
        self._poll_seconds = poll_seconds
        self._clock = clock
        self.wake_up = wake_up or MailWakeUp()

    async def run_once(self) -> int:
        """Handles every request due now; answers how many were claimed."""
        handled = 0
        while True:
            async with self._database.transaction() as session:
                batch = await IdentityRepository(session).claim_mail_requests(
                    self._clock(), self._claim, self.BATCH
                )
            if not batch:
                return handled
            await checkpoint("mail.claimed")
            for request in batch:
                try:
                    await self.handle(request)
                except Exception as error:
                    # Left claimed: retried once the claim lapses, like after a crash.
                    log.warning(
                        "mail request failed; retrying later",
                        extra={
                            "request_id": str(request.id),
                            "attempt": request.attempts,
                            "error": type(error).__name__,
                        },
                    )
            handled += len(batch)

    async def handle(self, request: MailRequest) -> None:
        if request.attempts > self.MAX_ATTEMPTS:
            log.error(
                "mail request given up",
                extra={"request_id": str(request.id), "purpose": request.purpose.value},
            )
        else:
            await self._deliver(request)
        async with self._database.transaction() as session:
            await IdentityRepository(session).delete_mail_request(request.id)

    async def _deliver(self, request: MailRequest) -> None:
        async with self._database.transaction() as session:
            message = await self._desk.compose(session, request)
        await checkpoint("mail.composed")
        if message is not None:
            await self._mailer.send(message, self._clock())
            await checkpoint("mail.delivered")

    async def run(self) -> None:
        """Until cancelled: every poll interval, or at once when woken; a failed round
        is logged and the next one tries again."""
        await every(
            self._poll_seconds, self.run_once, name="mail worker round", pause=self.wake_up.wait
        )
