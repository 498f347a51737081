"""Password change and reset, e-mail verification: single-use tokens that expire, and
sessions revoked where SPEC says so."""

from __future__ import annotations

import pathlib

import asyncpg
import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import (
    bearer,
    error_reason,
    log_in,
    mailed_token,
    mails_to,
    sign_up,
    unique_name,
    violated_field,
)

NEW_PASSWORD = "a brand new passphrase"


async def refresh_fails(identity: identity_pb2_grpc.IdentityServiceStub, token: str) -> bool:
    """True when the refresh token is refused as UNAUTHENTICATED."""
    try:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=token))
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


async def test_change_password_revokes_the_other_sessions(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity)
    other = await log_in(identity, account.username)

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await identity.ChangePassword(
            identity_pb2.ChangePasswordRequest(
                current_password="not it at all", new_password=NEW_PASSWORD
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(wrong.value) == "current_password"

    await identity.ChangePassword(
        identity_pb2.ChangePasswordRequest(
            current_password=account.password, new_password=NEW_PASSWORD
        ),
        metadata=bearer(account.access_token),
    )
    assert await refresh_fails(identity, other.refresh_token)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.GetCurrentUser(
            identity_pb2.GetCurrentUserRequest(), metadata=bearer(other.access_token)
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The session that changed it lives on.
    await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=account.refresh_token))
    await log_in(identity, account.email, NEW_PASSWORD)
    with pytest.raises(grpc.aio.AioRpcError):
        await log_in(identity, account.email, account.password)


async def test_new_password_must_differ_from_email_and_username(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity, username=unique_name("longusername"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.ChangePassword(
            identity_pb2.ChangePasswordRequest(
                current_password=account.password, new_password=account.username.upper()
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(refused.value) == "new_password"


async def test_password_reset_is_single_use_and_revokes_every_session(
    identity: identity_pb2_grpc.IdentityServiceStub, mailbox: pathlib.Path
) -> None:
    account = await sign_up(identity)
    other = await log_in(identity, account.username)
    await identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=account.email.upper())
    )
    token = await mailed_token(mailbox, account.email, "password_reset")

    await identity.ResetPassword(
        identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)
    )
    assert await refresh_fails(identity, account.refresh_token)
    assert await refresh_fails(identity, other.refresh_token)
    await log_in(identity, account.username, NEW_PASSWORD)

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=token, new_password="yet another one!")
        )
    assert violated_field(reused.value) == "token"
    assert error_reason(reused.value) == "TOKEN_INVALID"


async def test_password_reset_tokens_expire_and_a_newer_one_replaces_an_older_one(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
    clock: AdjustableClock,
) -> None:
    account = await sign_up(identity)
    request = identity_pb2.RequestPasswordResetRequest(email=account.email)
    await identity.RequestPasswordReset(request)
    older = await mailed_token(mailbox, account.email, "password_reset")
    await identity.RequestPasswordReset(request)
    newer = await mailed_token(mailbox, account.email, "password_reset", count=2)
    assert older != newer

    with pytest.raises(grpc.aio.AioRpcError) as replaced:
        await identity.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=older, new_password=NEW_PASSWORD)
        )
    assert violated_field(replaced.value) == "token"

    clock.advance(seconds=3601)  # the reset link lives an hour
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await identity.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=newer, new_password=NEW_PASSWORD)
        )
    assert violated_field(expired.value) == "token"


async def test_password_reset_request_is_ok_for_unknown_addresses(
    identity: identity_pb2_grpc.IdentityServiceStub, mailbox: pathlib.Path
) -> None:
    ghost = f"{unique_name('ghost')}@example.com"
    await identity.RequestPasswordReset(identity_pb2.RequestPasswordResetRequest(email=ghost))
    assert mails_to(mailbox, ghost) == []


async def test_a_policy_violation_leaves_the_reset_token_usable(
    identity: identity_pb2_grpc.IdentityServiceStub, mailbox: pathlib.Path
) -> None:
    account = await sign_up(identity)
    await identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=account.email)
    )
    token = await mailed_token(mailbox, account.email, "password_reset")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=token, new_password=account.email)
        )
    assert violated_field(refused.value) == "new_password"
    await identity.ResetPassword(
        identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)
    )


async def test_email_verification_is_single_use(
    identity: identity_pb2_grpc.IdentityServiceStub, mailbox: pathlib.Path
) -> None:
    account = await sign_up(identity)
    token = await mailed_token(mailbox, account.email, "email_verification")
    verified = await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert verified.user.email_verified
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert violated_field(reused.value) == "token"

    with pytest.raises(grpc.aio.AioRpcError) as already:
        await identity.SendVerificationEmail(
            identity_pb2.SendVerificationEmailRequest(), metadata=bearer(account.access_token)
        )
    assert already.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_email_verification_tokens_expire(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
    clock: AdjustableClock,
) -> None:
    account = await sign_up(identity)
    await identity.SendVerificationEmail(
        identity_pb2.SendVerificationEmailRequest(), metadata=bearer(account.access_token)
    )
    token = await mailed_token(mailbox, account.email, "email_verification")
    clock.advance(hours=48, seconds=1)
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert violated_field(expired.value) == "token"


async def test_verification_of_the_current_address_does_not_verify_a_pending_one(
    identity: identity_pb2_grpc.IdentityServiceStub, mailbox: pathlib.Path
) -> None:
    account = await sign_up(identity)
    old_token = await mailed_token(mailbox, account.email, "email_verification")
    new_address = f"{unique_name('moved')}@example.com"
    await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(email=new_address, current_password=account.password),
        metadata=bearer(account.access_token),
    )
    # The link proves the address it was mailed to, which is still the account's...
    verified = await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=old_token))
    # ...and not the pending one, which only its own link confirms.
    assert (verified.user.email, verified.user.email_verified) == (new_address, False)
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=old_token))
    assert violated_field(reused.value) == "token"


async def test_tokens_are_stored_only_as_digests(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
    admin_db: asyncpg.Connection,
) -> None:
    account = await sign_up(identity)
    token = await mailed_token(mailbox, account.email, "email_verification")
    stored = await admin_db.fetch("SELECT token_hash FROM identity.one_time_tokens")
    stored += await admin_db.fetch("SELECT token_hash FROM identity.refresh_tokens")
    assert all(len(row["token_hash"]) == 32 for row in stored)
    outbox = await admin_db.fetch("SELECT payload::text AS payload FROM identity.outbox")
    assert not any(token in row["payload"] for row in outbox)
    assert not any(account.refresh_token in row["payload"] for row in outbox)
