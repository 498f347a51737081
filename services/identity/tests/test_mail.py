"""Mail requests: the same deferred row whether or not an address is registered, the
worker that sends later, and the rate limits per address and per user.

The servers here run on a clock a few days ahead of the session's, so the rows they write
are not yet due for the session server's own mail worker: each test sees only its own."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.db import RemoteCallInTransaction
from runtime.server import RunningServer
from services.identity.mail import MailboxFolder, MailMessage
from services.identity.models import MailPurpose
from services.identity.repository import IdentityRepository
from services.identity.server import build, start
from services.identity.settings import IdentitySettings
from services.identity.tests.conftest import AdjustableClock, identity_settings_for
from services.identity.tests.support import (
    mail_requests_handled,
    mails_to,
    sign_up,
    unique_name,
    wait_for_mails,
)


async def serve_ahead(
    migrated_db: str, mailbox: pathlib.Path, days: int, *, mail_worker: bool, **settings: Any
) -> tuple[RunningServer, AdjustableClock]:
    clock = AdjustableClock()
    clock.advance(days=days)
    running = await start(
        identity_settings_for(migrated_db, mailbox, **settings),
        port=0,
        clock=clock,
        mail_worker=mail_worker,
    )
    return running, clock


@pytest.fixture(scope="module")
async def quiet(
    migrated_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[identity_pb2_grpc.IdentityServiceStub]:
    """A server whose mail requests nobody handles while the test looks at them."""
    running, _ = await serve_ahead(
        migrated_db, tmp_path_factory.mktemp("quiet"), 100, mail_worker=False
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield identity_pb2_grpc.IdentityServiceStub(channel)
    await running.stop(0)


async def snapshot(admin_db: asyncpg.Connection) -> dict[str, str]:
    """Every identity table's content, as a digest per table."""
    tables = await admin_db.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'identity' AND table_type = 'BASE TABLE'"
    )
    digests = {}
    for row in tables:
        name = row["table_name"]
        digests[name] = await admin_db.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
            f" FROM identity.{name} t"
        )
    return digests


async def settled_snapshot(admin_db: asyncpg.Connection) -> dict[str, str]:
    """A snapshot that did not change for a fifth of a second."""
    previous = await snapshot(admin_db)
    for _ in range(100):
        await asyncio.sleep(0.2)
        current = await snapshot(admin_db)
        if current == previous:
            return current
        previous = current
    return previous


async def test_a_reset_request_writes_the_same_deferred_row_for_a_registered_and_an_unknown_address(
    quiet: identity_pb2_grpc.IdentityServiceStub, admin_db: asyncpg.Connection
) -> None:
    registered = await sign_up(quiet)
    unknown = f"{unique_name('ghost')}@example.com"
    written = []
    for address in (registered.email, unknown):
        # Other servers' background work (an earlier test's mail, start-up housekeeping)
        # can touch a table at the same moment; a clean look needs a still moment.
        for _ in range(3):
            before = await settled_snapshot(admin_db)
            await quiet.RequestPasswordReset(
                identity_pb2.RequestPasswordResetRequest(email=address)
            )
            after = await snapshot(admin_db)
            changed = [table for table in before if before[table] != after[table]]
            if changed == ["mail_requests"] or "mail_requests" not in changed:
                break
            await admin_db.execute("DELETE FROM identity.mail_requests WHERE address = $1", address)
        # Nothing but the mail request: no token, no outbox event, no lookup's side effect.
        assert changed == ["mail_requests"]
        rows = await admin_db.fetch(
            "SELECT purpose, address, user_id, attempts FROM identity.mail_requests"
            " WHERE address = $1",
            address,
        )
        assert len(rows) == 1
        written.append(dict(rows[0]) | {"address": "…"})
    assert (
        written[0]
        == written[1]
        == {
            "purpose": "password_reset",
            "address": "…",
            "user_id": None,
            "attempts": 0,
        }
    )
    await admin_db.execute(
        "DELETE FROM identity.mail_requests WHERE address = ANY($1::text[]) OR user_id = $2",
        [registered.email, unknown],
        uuid.UUID(registered.user_id),
    )


@pytest.fixture(scope="module")
async def strict_mail(
    migrated_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[identity_pb2_grpc.IdentityServiceStub, pathlib.Path, AdjustableClock]]:
    mailbox = tmp_path_factory.mktemp("strict-mail")
    running, clock = await serve_ahead(
        migrated_db,
        mailbox,
        200,
        mail_worker=True,
        mail_per_cooldown=3,
        mail_cooldown_seconds=900,
        mail_daily_cap=5,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield identity_pb2_grpc.IdentityServiceStub(channel), mailbox, clock
    await running.stop(0)


async def test_the_fourth_reset_mail_to_one_address_within_the_cooldown_is_not_sent(
    strict_mail: tuple[identity_pb2_grpc.IdentityServiceStub, pathlib.Path, AdjustableClock],
    admin_db: asyncpg.Connection,
) -> None:
    identity, mailbox, clock = strict_mail
    account = await sign_up(identity)
    request = identity_pb2.RequestPasswordResetRequest(email=account.email)
    for _ in range(4):
        await identity.RequestPasswordReset(request)  # each answers OK
    await mail_requests_handled(admin_db, account.email)
    resets = [
        m for m in mails_to(mailbox, account.email) if m["X-Pixelshop-Template"] == "password_reset"
    ]
    assert len(resets) == 3

    # After the cooldown the address gets mail again, up to the daily cap (5 of any kind:
    # the sign-up's verification and three resets came already).
    clock.advance(seconds=901)
    for _ in range(3):
        await identity.RequestPasswordReset(request)
    await mail_requests_handled(admin_db, account.email)
    assert len(await wait_for_mails(mailbox, account.email, "password_reset", 4)) == 4
    assert len(mails_to(mailbox, account.email)) == 5


async def test_mail_about_one_user_is_limited_across_addresses(
    strict_mail: tuple[identity_pb2_grpc.IdentityServiceStub, pathlib.Path, AdjustableClock],
    migrated_db: str,
    admin_db: asyncpg.Connection,
) -> None:
    identity, mailbox, clock = strict_mail
    account = await sign_up(identity)
    await mail_requests_handled(admin_db, account.user_id)
    settings = identity_settings_for(
        migrated_db, mailbox, mail_per_cooldown=3, mail_cooldown_seconds=900, mail_daily_cap=5
    )
    components = build(settings, clock=clock)
    addresses = [f"{unique_name('old')}@example.com" for _ in range(4)]
    try:
        async with components.database.transaction() as session:
            for address in addresses:  # four notices about one account, to four addresses
                await IdentityRepository(session).insert_mail_request(
                    purpose=MailPurpose.EMAIL_CHANGED,
                    address=address,
                    user_id=uuid.UUID(account.user_id),
                    now=clock(),
                )
        await components.mail.run_once()  # or the server's worker, whichever claims first
    finally:
        await components.close()
    await mail_requests_handled(admin_db, account.user_id)
    assert [len(mails_to(mailbox, address)) for address in addresses] == [1, 1, 1, 0]


async def test_mail_is_never_delivered_inside_a_transaction(
    identity_settings: IdentitySettings, tmp_path: pathlib.Path
) -> None:
    components = build(identity_settings)
    folder = MailboxFolder(tmp_path)
    message = MailMessage(
        to="someone@example.com",
        subject="s",
        body="b",
        template="password_reset",
        message_id=uuid.uuid4(),
    )
    try:
        async with components.database.transaction():
            with pytest.raises(RemoteCallInTransaction):
                await folder.send(message, datetime.datetime.now(datetime.UTC))
    finally:
        await components.close()
    assert names_in(tmp_path) == []
    await folder.send(message, datetime.datetime.now(datetime.UTC))
    assert names_in(tmp_path) == [f"{message.message_id}.eml"]


def names_in(folder: pathlib.Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())
