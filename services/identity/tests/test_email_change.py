"""Changing the e-mail address re-authenticates (ADR 0013's amendment): an access token
alone (stolen, or a borrowed laptop; it lives up to 15 minutes) could otherwise move the
account to its holder's mailbox, confirm the link mailed there and reset the password
through it. The password is checked like ChangePassword's: the same error for a wrong
one, the same throttle. Display name, username and cancelling a pending change need
none."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.tests.conftest import (
    AdjustableClock,
    identity_settings_for,
    identity_with,
)
from services.identity.tests.support import (
    Account,
    bearer,
    error_reason,
    log_in,
    mail_requests_handled,
    mailed_token,
    mails_to,
    retry_delay_seconds,
    sign_up,
    status,
    unique_name,
    violated_field,
)

ACCOUNT_LIMIT = 3
ACCOUNT_WINDOW = 900


@pytest.fixture(scope="module")
async def strict(
    migrated_db: str, mailbox: pathlib.Path, clock: AdjustableClock
) -> AsyncIterator[identity_pb2_grpc.IdentityServiceStub]:
    settings = identity_settings_for(
        migrated_db,
        mailbox,
        login_account_max_failures=ACCOUNT_LIMIT,
        login_account_window_seconds=ACCOUNT_WINDOW,
    )
    async with identity_with(settings, clock) as stub:
        yield stub


def new_address() -> str:
    return f"{unique_name('moved')}@example.com"


async def change_email(
    identity: identity_pb2_grpc.IdentityServiceStub,
    account: Account,
    address: str,
    password: str | None = None,
) -> identity_pb2.User:
    request = identity_pb2.UpdateCurrentUserRequest(email=address)
    if password is not None:
        request.current_password = password
    response = await identity.UpdateCurrentUser(request, metadata=bearer(account.access_token))
    return response.user


async def assert_nothing_pending(
    admin_db: asyncpg.Connection, mailbox: pathlib.Path, account: Account, address: str
) -> None:
    """No pending address, no e-mail change link, and (once the worker is idle for this
    account) no mail to the address asked for."""
    row = await admin_db.fetchrow(
        "SELECT email, pending_email FROM identity.users WHERE id = $1::uuid", account.user_id
    )
    assert row is not None
    assert (row["email"], row["pending_email"]) == (account.email, None)
    requests = await admin_db.fetchval(
        "SELECT count(*) FROM identity.mail_requests"
        " WHERE user_id = $1::uuid AND purpose = 'email_change'",
        account.user_id,
    )
    assert requests == 0
    await mail_requests_handled(admin_db, account.user_id)
    links = await admin_db.fetchval(
        "SELECT count(*) FROM identity.one_time_tokens"
        " WHERE user_id = $1::uuid AND purpose = 'email_change'",
        account.user_id,
    )
    assert links == 0
    assert mails_to(mailbox, address) == []


async def test_an_address_change_without_the_password_is_refused_and_writes_nothing(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    address = new_address()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await change_email(identity, account, address)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(missing.value) == "current_password"
    # Named in the mask, alongside a display name: still refused, and nothing changes.
    with pytest.raises(grpc.aio.AioRpcError) as masked:
        await identity.UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(
                email=address,
                display_name="Not Renamed",
                update_mask=field_mask_pb2.FieldMask(paths=["email", "display_name"]),
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(masked.value) == "current_password"
    # A registered address is refused the same way (ADR 0013).
    taken = await sign_up(identity)
    with pytest.raises(grpc.aio.AioRpcError) as registered:
        await change_email(identity, account, taken.email)
    assert status(registered.value) == status(missing.value)

    me = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(account.access_token)
    )
    assert (me.user.email, me.user.display_name) == (account.email, account.username)
    await assert_nothing_pending(admin_db, mailbox, account, address)
    assert [m["X-Pixelshop-Template"] for m in mails_to(mailbox, taken.email)] == [
        "email_verification"  # its own sign-up's; no "address_in_use" notice
    ]


async def test_a_wrong_password_is_answered_like_change_password_and_writes_nothing(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    address = new_address()
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await change_email(identity, account, address, "not the password at all")
    with pytest.raises(grpc.aio.AioRpcError) as wrong_change:
        await identity.ChangePassword(
            identity_pb2.ChangePasswordRequest(
                current_password="not the password at all", new_password="whatever it becomes"
            ),
            metadata=bearer(account.access_token),
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(wrong.value) == "current_password"
    assert error_reason(wrong.value) == "WRONG_PASSWORD"
    # Byte for byte: code, reason, message and details.
    assert status(wrong.value) == status(wrong_change.value)
    # A registered address gets the very same answer.
    taken = await sign_up(identity)
    with pytest.raises(grpc.aio.AioRpcError) as registered:
        await change_email(identity, account, taken.email, "not the password at all")
    assert status(registered.value) == status(wrong.value)
    await assert_nothing_pending(admin_db, mailbox, account, address)


async def test_wrong_passwords_share_the_log_in_throttle(
    strict: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
    clock: AdjustableClock,
) -> None:
    clock.freeze()
    account = await sign_up(strict)
    address = new_address()
    # The account's budget is shared: ChangePassword's failures count here too.
    with pytest.raises(grpc.aio.AioRpcError):
        await strict.ChangePassword(
            identity_pb2.ChangePasswordRequest(
                current_password="a wrong guess", new_password="whatever it becomes"
            ),
            metadata=bearer(account.access_token),
        )
    for _ in range(ACCOUNT_LIMIT - 1):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await change_email(strict, account, address, "a wrong guess")
        assert error_reason(failed.value) == "WRONG_PASSWORD"

    # Even the right password is refused now; the answer says how long to back off.
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await change_email(strict, account, address, account.password)
    assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(throttled.value) == "LOGIN_THROTTLED"
    delay = retry_delay_seconds(throttled.value)
    assert 1 <= delay <= ACCOUNT_WINDOW
    with pytest.raises(grpc.aio.AioRpcError) as log_in_throttled:
        await log_in(strict, account.username, account.password)
    assert log_in_throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_nothing_pending(admin_db, mailbox, account, address)

    clock.advance(seconds=delay)
    moved = await change_email(strict, account, address, account.password)
    assert moved.email == address
    # The right password was refunded: the account has its whole budget again.
    for _ in range(ACCOUNT_LIMIT - 1):
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await change_email(strict, account, new_address(), "a wrong guess")
        assert error_reason(again.value) == "WRONG_PASSWORD"


async def test_the_right_password_records_the_pending_address_and_mails_its_link(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    # Its verification mail first: one still waiting would go to the pending address.
    await mail_requests_handled(admin_db, account.user_id)
    address = new_address()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await change_email(identity, account, address)
    assert violated_field(missing.value) == "current_password"
    moved = await change_email(identity, account, address.upper(), account.password)
    assert (moved.email, moved.email_verified) == (address, False)
    pending = await admin_db.fetchval(
        "SELECT pending_email FROM identity.users WHERE id = $1::uuid", account.user_id
    )
    assert pending == address
    token = await mailed_token(mailbox, address, "email_change")
    confirmed = await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert (confirmed.user.email, confirmed.user.email_verified) == (address, True)


async def test_display_name_and_username_need_no_password(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity)
    name = unique_name("renamed")
    updated = await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(display_name="Renamed", username=name),
        metadata=bearer(account.access_token),
    )
    assert (updated.user.display_name, updated.user.username) == ("Renamed", name)
    # Sending the address the account already has is no change either.
    same = await change_email(identity, account, account.email.upper())
    assert (same.email, same.username) == (account.email, name)
    # Only the address is guarded: the same request asking for a new one is refused whole.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(
                display_name="Renamed Again", username=unique_name("again"), email=new_address()
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(refused.value) == "current_password"
    me = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(account.access_token)
    )
    assert (me.user.display_name, me.user.username, me.user.email) == (
        "Renamed",
        name,
        account.email,
    )


async def test_cancelling_a_pending_change_needs_no_password(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    # Its verification mail first: one still waiting would go to the pending address.
    await mail_requests_handled(admin_db, account.user_id)
    address = new_address()
    await change_email(identity, account, address, account.password)
    token = await mailed_token(mailbox, address, "email_change")
    # Asking for the pending address again changes nothing and needs none either.
    again = await change_email(identity, account, address)
    assert again.email == address

    cancelled = await change_email(identity, account, account.email)
    assert cancelled.email == account.email
    pending = await admin_db.fetchval(
        "SELECT pending_email FROM identity.users WHERE id = $1::uuid", account.user_id
    )
    assert pending is None
    with pytest.raises(grpc.aio.AioRpcError) as void:
        await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert violated_field(void.value) == "token"
    # Once cancelled, asking for that address once more is a new change: password needed.
    with pytest.raises(grpc.aio.AioRpcError) as renewed:
        await change_email(identity, account, address)
    assert violated_field(renewed.value) == "current_password"


async def test_a_change_refused_after_the_right_password_keeps_its_refund(
    strict: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    mailbox: pathlib.Path,
) -> None:
    taken = await sign_up(strict)
    account = await sign_up(strict)
    address = new_address()
    for _ in range(ACCOUNT_LIMIT + 1):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await strict.UpdateCurrentUser(
                identity_pb2.UpdateCurrentUserRequest(
                    username=taken.username, email=address, current_password=account.password
                ),
                metadata=bearer(account.access_token),
            )
        assert error_reason(refused.value) == "USERNAME_TAKEN"  # never LOGIN_THROTTLED
    await assert_nothing_pending(admin_db, mailbox, account, address)
    await log_in(strict, account.username, account.password)
