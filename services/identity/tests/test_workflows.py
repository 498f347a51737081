"""Every identity workflow crashed between each pair of its steps (ADR 0011): the run is
recorded once to learn its checkpoints, then a fresh run crashes at each one, and the
caller's retry (or, for mail, the worker's next round once the claim lapsed) ends in a
consistent state.

The workflows run on their own components (`build`), against the session's database;
the session server's mail worker runs alongside, so recorded checkpoints are filtered to
the workflow under test."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import jwt
import pytest

from runtime.context import Principal
from runtime.errors import AlreadyExists, InvalidArgument, Unauthenticated
from runtime.server import RunningServer
from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.identity.models import ThrottleScope
from services.identity.server import IdentityComponents, build
from services.identity.service import ClientInfo, IssuedTokens, ProfileChanges
from services.identity.settings import IdentitySettings
from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import (
    PASSWORD,
    mail_requests_handled,
    mailed_token,
    unique_name,
    wait_for_mails,
)
from services.identity.throttle import subject_hash

CLIENT = ClientInfo(address="10.77.0.1", user_agent="crash tests")
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(autouse=True)
def _session_server(identity_server: RunningServer) -> None:
    """Its mail worker delivers the mail these workflows request (as in production)."""


@pytest.fixture
async def components(
    identity_settings: IdentitySettings, clock: AdjustableClock
) -> AsyncIterator[IdentityComponents]:
    built = build(identity_settings, clock=clock)
    yield built
    await built.close()


def principal(issued: IssuedTokens) -> Principal:
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    return Principal(
        user_id=uuid.UUID(claims["sub"]),
        session_id=uuid.UUID(claims["sid"]),
        tier=claims["tier"],
        token_id=claims["jti"],
        expires_at=claims["exp"],
    )


async def sign_up(components: IdentityComponents, name: str | None = None) -> IssuedTokens:
    name = name or unique_name("crash")
    return await components.workflows.sign_up(
        email=f"{name}@example.com",
        username=name,
        password=PASSWORD,
        display_name="",
        client=CLIENT,
    )


def steps_of(passed: list[str], workflow: str) -> list[str]:
    return [name for name in passed if name.startswith(f"{workflow}.")]


async def account_failures(admin_db: asyncpg.Connection, user_id: uuid.UUID) -> int:
    key = subject_hash(ThrottleScope.ACCOUNT, f"user:{user_id}")
    total = await admin_db.fetchval(
        "SELECT coalesce(sum(failures), 0) FROM identity.login_failures"
        " WHERE scope = 'account' AND subject_hash = $1",
        key,
    )
    return int(total)


async def test_sign_up(
    components: IdentityComponents, admin_db: asyncpg.Connection, mailbox: pathlib.Path
) -> None:
    with record_checkpoints() as passed:
        await sign_up(components)
    steps = steps_of(passed, "sign_up")
    assert steps == ["sign_up.password_hashed", "sign_up.recorded"]
    for step in steps:
        name = unique_name("crash")
        with crash_at(step), pytest.raises(SimulatedCrash):
            await sign_up(components, name)
        if step == "sign_up.recorded":
            # It had committed: the client's retry finds the name is its account's.
            with pytest.raises(AlreadyExists) as taken:
                await sign_up(components, name)
            assert taken.value.reason == "USERNAME_TAKEN"
        else:
            await sign_up(components, name)  # nothing was written: the retry signs up
        rows = await admin_db.fetch(
            "SELECT id, email FROM identity.users WHERE username = $1", name
        )
        assert [row["email"] for row in rows] == [f"{name}@example.com"]  # one account
        await mail_requests_handled(admin_db, str(rows[0]["id"]))
        mails = await wait_for_mails(mailbox, f"{name}@example.com", "email_verification")
        assert len(mails) == 1  # one verification mail, not one per attempt
        await components.workflows.log_in(name, PASSWORD, CLIENT)


async def test_log_in(components: IdentityComponents, admin_db: asyncpg.Connection) -> None:
    account = await sign_up(components)
    name = account.user.username
    with record_checkpoints() as passed:
        await components.workflows.log_in(name, PASSWORD, CLIENT)
    steps = steps_of(passed, "log_in")
    assert steps == ["log_in.attempt_counted", "log_in.password_checked", "log_in.session_started"]
    sessions = "SELECT count(*) FROM identity.sessions WHERE user_id = $1"
    for step in steps:
        before = await admin_db.fetchval(sessions, account.user.id)
        with crash_at(step), pytest.raises(SimulatedCrash):
            await components.workflows.log_in(name, PASSWORD, CLIENT)
        if step == "log_in.attempt_counted":
            assert await account_failures(admin_db, account.user.id) == 1  # counted, pending
        await components.workflows.log_in(name, PASSWORD, CLIENT)
        # The retry's success clears the account's count, the crashed attempt's included.
        assert await account_failures(admin_db, account.user.id) == 0
        started = await admin_db.fetchval(sessions, account.user.id) - before
        # A session whose tokens never reached the client simply idles out.
        assert started == (2 if step == "log_in.session_started" else 1)


async def test_change_password(
    components: IdentityComponents, admin_db: asyncpg.Connection
) -> None:
    async def change(issued: IssuedTokens) -> None:
        await components.workflows.change_password(
            principal(issued),
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
            client=CLIENT,
        )

    with record_checkpoints() as passed:
        await change(await sign_up(components))
    steps = steps_of(passed, "change_password")
    assert steps == [
        "change_password.attempt_counted",
        "change_password.password_checked",
        "change_password.changed",
    ]
    for step in steps:
        account = await sign_up(components)
        other = await components.workflows.log_in(account.user.username, PASSWORD, CLIENT)
        with crash_at(step), pytest.raises(SimulatedCrash):
            await change(account)
        if step == "change_password.changed":
            with pytest.raises(InvalidArgument) as wrong:  # done already: the retry is refused
                await change(account)
            assert wrong.value.field == "current_password"
        else:
            await change(account)
        # Either way: the new password works, the old one does not, other sessions ended.
        await components.workflows.log_in(account.user.username, NEW_PASSWORD, CLIENT)
        with pytest.raises(Unauthenticated):
            await components.workflows.log_in(account.user.username, PASSWORD, CLIENT)
        revoked = await admin_db.fetchval(
            "SELECT revoked_reason FROM identity.sessions WHERE id = $1", other.session_id
        )
        assert revoked == "password_changed"


async def test_an_email_change(
    components: IdentityComponents, admin_db: asyncpg.Connection, mailbox: pathlib.Path
) -> None:
    async def change(issued: IssuedTokens, address: str) -> None:
        await components.workflows.update_profile(
            principal(issued),
            ProfileChanges(email=address),
            current_password=PASSWORD,
            client=CLIENT,
        )

    with record_checkpoints() as passed:
        await change(await sign_up(components), f"{unique_name('moved')}@example.com")
    steps = steps_of(passed, "update_profile")
    assert steps == [
        "update_profile.attempt_counted",
        "update_profile.password_checked",
        "update_profile.updated",
    ]
    for step in steps:
        account = await sign_up(components)
        # Its verification mail first: one still waiting would go to the pending address.
        await mail_requests_handled(admin_db, str(account.user.id))
        address = f"{unique_name('moved')}@example.com"
        with crash_at(step), pytest.raises(SimulatedCrash):
            await change(account, address)
        if step != "update_profile.updated":
            assert await account_failures(admin_db, account.user.id) == 1  # counted, pending
        # The retry runs through (after the last step it asks for the pending address
        # again: no change), and its success clears the count.
        await change(account, address)
        assert await account_failures(admin_db, account.user.id) == 0
        pending = await admin_db.fetchval(
            "SELECT pending_email FROM identity.users WHERE id = $1", account.user.id
        )
        assert pending == address
        await mail_requests_handled(admin_db, str(account.user.id))
        assert len(await wait_for_mails(mailbox, address, "email_change")) == 1


async def test_delete_account(components: IdentityComponents, admin_db: asyncpg.Connection) -> None:
    async def delete(issued: IssuedTokens) -> None:
        await components.workflows.delete_account(
            principal(issued), password=PASSWORD, client=CLIENT
        )

    with record_checkpoints() as passed:
        await delete(await sign_up(components))
    steps = steps_of(passed, "delete_account")
    assert steps == [
        "delete_account.attempt_counted",
        "delete_account.password_checked",
        "delete_account.deleted",
    ]
    for step in steps:
        account = await sign_up(components)
        with crash_at(step), pytest.raises(SimulatedCrash):
            await delete(account)
        if step == "delete_account.deleted":
            with pytest.raises(Unauthenticated):  # it happened: the session is gone
                await delete(account)
        else:
            await delete(account)
        row = await admin_db.fetchrow(
            "SELECT email, username, pending_email, deleted_at FROM identity.users WHERE id = $1",
            account.user.id,
        )
        assert row is not None
        assert row["deleted_at"] is not None
        assert (row["email"], row["username"], row["pending_email"]) == (None, None, None)
        events = await admin_db.fetchval(
            "SELECT count(*) FROM identity.outbox WHERE type = 'user.deleted' AND user_id = $1",
            account.user.id,
        )
        assert events == 1
        leftovers = await admin_db.fetchval(
            "SELECT (SELECT count(*) FROM identity.sessions WHERE user_id = $1)"
            " + (SELECT count(*) FROM identity.one_time_tokens WHERE user_id = $1)"
            " + (SELECT count(*) FROM identity.mail_requests WHERE user_id = $1)",
            account.user.id,
        )
        assert leftovers == 0


async def test_the_mail_worker(
    identity_settings: IdentitySettings, admin_db: asyncpg.Connection, mailbox: pathlib.Path
) -> None:
    # Days ahead of the session's clock: the session server's worker leaves these rows be.
    ahead = AdjustableClock()
    ahead.advance(days=10)
    components = build(identity_settings, clock=ahead)
    try:
        await components.mail.run_once()  # whatever is due already
        first = await sign_up(components)  # its verification mail is the request
        with record_checkpoints() as passed:
            await components.mail.run_once()
        steps = steps_of(passed, "mail")
        assert steps == ["mail.claimed", "mail.composed", "mail.delivered"]
        assert len(await wait_for_mails(mailbox, first.user.shown_email, "email_verification"))
        for step in steps:
            account = await sign_up(components)
            address = account.user.shown_email
            with crash_at(step), pytest.raises(SimulatedCrash):
                await components.mail.run_once()
            # The claim holds until it lapses; then the next round takes the row up again.
            await components.mail.run_once()
            ahead.advance(seconds=identity_settings.mail_claim_seconds + 1)
            await components.mail.run_once()
            await mail_requests_handled(admin_db, str(account.user.id))
            mails = await wait_for_mails(mailbox, address, "email_verification")
            assert len(mails) == 1  # a re-sent mail replaces its file (same message id)
            token = await mailed_token(mailbox, address, "email_verification")
            async with components.database.transaction() as session:
                verified = await components.accounts.verify_email(session, token)
            assert verified.verified
    finally:
        await components.close()
