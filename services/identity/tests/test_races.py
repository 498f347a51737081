"""Operations that race each other on one account: each interleaving is forced (a
transaction held open, or a step paused), so nothing here depends on timing."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.context import Principal
from runtime.db import Database
from services.identity.models import SCHEMA
from services.identity.repository import IdentityRepository
from services.identity.server import IdentityComponents, build
from services.identity.service import ClientInfo
from services.identity.settings import IdentitySettings
from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import (
    Account,
    bearer,
    error_reason,
    log_in,
    mail_requests_handled,
    mailed_token,
    sign_up,
    unique_name,
    violated_field,
)

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def database(identity_settings: IdentitySettings) -> AsyncIterator[Database]:
    """A second connection pool, for the side of a race the test drives by hand."""
    opened = Database.connect(identity_settings.database_url.reveal(), SCHEMA, 2)
    yield opened
    await opened.close()


@pytest.fixture
async def components(
    identity_settings: IdentitySettings, clock: AdjustableClock
) -> AsyncIterator[IdentityComponents]:
    built = build(identity_settings, clock=clock)
    yield built
    await built.close()


async def wait_until_blocked(admin_db: asyncpg.Connection, task: asyncio.Task[Any]) -> None:
    """Returns once a statement of identity waits for a lock (or `task` is already over)."""
    while not task.done():
        waiting = await admin_db.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.application_name = 'pixelshop-identity'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)


def principal_of(account: Account) -> Principal:
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    return Principal(
        user_id=uuid.UUID(claims["sub"]),
        session_id=uuid.UUID(claims["sid"]),
        tier=claims["tier"],
        token_id=claims["jti"],
        expires_at=claims["exp"],
    )


async def live_refresh_tokens(admin_db: asyncpg.Connection, user_id: str) -> int:
    count = await admin_db.fetchval(
        "SELECT count(*) FROM identity.refresh_tokens t"
        " JOIN identity.sessions s ON s.id = t.session_id"
        " WHERE s.user_id = $1 AND s.revoked_at IS NULL"
        " AND t.rotated_at IS NULL AND t.revoked_at IS NULL",
        uuid.UUID(user_id),
    )
    return int(count)


async def test_a_refresh_racing_a_password_change_neither_deadlocks_nor_survives_it(
    identity: identity_pb2_grpc.IdentityServiceStub,
    components: IdentityComponents,
    database: Database,
    admin_db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await sign_up(identity)
    laptop = await log_in(identity, account.username)

    # The laptop's refresh stops right before it extends its session...
    reached, go = asyncio.Event(), asyncio.Event()
    extend_session = IdentityRepository.extend_session

    async def paused(self: IdentityRepository, *args: Any) -> None:
        reached.set()
        await go.wait()
        await extend_session(self, *args)

    monkeypatch.setattr(IdentityRepository, "extend_session", paused)

    async def refresh() -> Any:
        async with database.transaction() as session:
            return await components.sessions.refresh(session, laptop.refresh_token)

    refreshing = asyncio.create_task(refresh())
    await reached.wait()
    # ...while the phone changes the password, which ends every other session.
    changing = asyncio.create_task(
        components.workflows.change_password(
            principal_of(account),
            current_password=account.password,
            new_password=NEW_PASSWORD,
            client=ClientInfo(address="", user_agent=""),
        )
    )
    await wait_until_blocked(admin_db, changing)
    go.set()
    refreshed, changed = await asyncio.gather(refreshing, changing, return_exceptions=True)

    assert not isinstance(changed, BaseException), repr(changed)
    assert not isinstance(refreshed, BaseException), repr(refreshed)
    # Whatever the refresh handed out belongs to a session that has ended.
    assert await live_refresh_tokens(admin_db, account.user_id) == 1  # the phone's own
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=refreshed.refresh_token))
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_log_in_with_the_old_password_racing_a_reset_gets_no_lasting_session(
    identity: identity_pb2_grpc.IdentityServiceStub,
    components: IdentityComponents,
    database: Database,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    await identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=account.email)
    )
    token = await mailed_token(mailbox, account.email, "password_reset")

    password_hash = await components.passwords.hash(NEW_PASSWORD)
    async with database.transaction() as session:
        await components.accounts.reset_password(session, token, NEW_PASSWORD, password_hash)
        # The reset has not committed yet when a log-in with the old password arrives.
        logging_in = asyncio.create_task(log_in(identity, account.username, account.password))
        await wait_until_blocked(admin_db, logging_in)

    # It waited for the reset, then found the password changed.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await logging_in
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await live_refresh_tokens(admin_db, account.user_id) == 0
    await log_in(identity, account.username, NEW_PASSWORD)


async def test_a_password_change_racing_a_reset_does_not_undo_it(
    identity: identity_pb2_grpc.IdentityServiceStub,
    components: IdentityComponents,
    database: Database,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)  # say, a thief who knows the old password
    await identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=account.email)
    )
    token = await mailed_token(mailbox, account.email, "password_reset")

    async def change() -> identity_pb2.ChangePasswordResponse:
        return await identity.ChangePassword(
            identity_pb2.ChangePasswordRequest(
                current_password=account.password, new_password="the thief's choice"
            ),
            metadata=bearer(account.access_token),
        )

    password_hash = await components.passwords.hash(NEW_PASSWORD)
    async with database.transaction() as session:
        await components.accounts.reset_password(session, token, NEW_PASSWORD, password_hash)
        changing = asyncio.create_task(change())
        await wait_until_blocked(admin_db, changing)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await changing
    assert refused.value.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAUTHENTICATED)
    await log_in(identity, account.username, NEW_PASSWORD)


async def test_a_reset_link_mailed_before_the_address_moved_does_not_work(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    await identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=account.email)
    )
    token = await mailed_token(mailbox, account.email, "password_reset")
    new_address = f"{unique_name('moved')}@example.com"
    await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(email=new_address, current_password=account.password),
        metadata=bearer(account.access_token),
    )
    confirmation = await mailed_token(mailbox, new_address, "email_change")
    moved = await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=confirmation))
    assert moved.user.email == new_address

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await identity.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)
        )
    assert violated_field(stale.value) == "token"
    assert error_reason(stale.value) == "TOKEN_INVALID"


async def test_concurrent_sign_ups_with_one_address_give_it_to_one_account(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    address = f"{unique_name('twin')}@example.com"
    attempts: list[Callable[[], Awaitable[Account]]] = [
        lambda n=n: sign_up(identity, username=unique_name(f"twin{n}"), email_address=address)
        for n in range(5)
    ]
    results = await asyncio.gather(*(attempt() for attempt in attempts))
    # Every one answers like a sign-up (nobody learns the address was taken) ...
    assert [r.email for r in results] == [address] * 5
    # ... and exactly one account has it; the others hold it pending, never confirmed.
    rows = await admin_db.fetch(
        "SELECT email, pending_email FROM identity.users WHERE id = ANY($1::uuid[])",
        [uuid.UUID(r.user_id) for r in results],
    )
    assert sorted((row["email"] is None, row["pending_email"]) for row in rows) == [
        (False, None),
        *[(True, address)] * 4,
    ]
    for result in results:
        await mail_requests_handled(admin_db, result.user_id)
