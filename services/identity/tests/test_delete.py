"""Deleting an account: re-authentication, scrubbed row, `user.deleted` in the outbox,
and nothing of the account works any more."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from services.identity.tests.support import (
    bearer,
    log_in,
    sign_up,
    violated_field,
)
from tests.support.settings import INTERNAL_SECRET


async def test_delete_account(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
    admin_db: asyncpg.Connection,
) -> None:
    account = await sign_up(identity)
    other = await log_in(identity, account.username)
    credential = ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "projects").token()),)
    cursor = identity_pb2.ListEventsResponse()
    while True:  # to the end of the outbox, so only this test's events follow
        cursor = await internal.ListEvents(
            identity_pb2.ListEventsRequest(
                after_xact_id=cursor.next_xact_id,
                after_sequence=cursor.next_sequence,
                page_size=500,
            ),
            metadata=credential,
        )
        if not cursor.events:
            break

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await identity.DeleteCurrentUser(
            identity_pb2.DeleteCurrentUserRequest(password="not my password"),
            metadata=bearer(account.access_token),
        )
    assert violated_field(wrong.value) == "password"

    await identity.DeleteCurrentUser(
        identity_pb2.DeleteCurrentUserRequest(password=account.password),
        metadata=bearer(account.access_token),
    )

    events = await internal.ListEvents(
        identity_pb2.ListEventsRequest(
            after_xact_id=cursor.next_xact_id, after_sequence=cursor.next_sequence
        ),
        metadata=credential,
    )
    deleted = [e for e in events.events if e.type == "user.deleted"]
    assert [e.user_id for e in deleted] == [account.user_id]
    assert deleted[0].payload["user_id"] == account.user_id

    for login in (account.username, account.email):
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await log_in(identity, login)
        assert gone.value.details() == "invalid login or password"
    for refresh_token in (account.refresh_token, other.refresh_token):
        with pytest.raises(grpc.aio.AioRpcError) as revoked:
            await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=refresh_token))
        assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.GetCurrentUser(
            identity_pb2.GetCurrentUserRequest(), metadata=bearer(other.access_token)
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as no_tier:
        await internal.GetUserTier(
            identity_pb2.GetUserTierRequest(user_id=account.user_id), metadata=credential
        )
    assert no_tier.value.code() == grpc.StatusCode.NOT_FOUND

    row = await admin_db.fetchrow(
        "SELECT email, username, password_hash, display_name, deleted_at"
        " FROM identity.users WHERE id = $1",
        uuid.UUID(account.user_id),
    )
    assert row is not None
    assert row["deleted_at"] is not None
    assert (row["email"], row["username"], row["password_hash"], row["display_name"]) == (
        None,
        None,
        None,
        "",
    )
    sessions = await admin_db.fetchval(
        "SELECT count(*) FROM identity.sessions WHERE user_id = $1", uuid.UUID(account.user_id)
    )
    assert sessions == 0

    # The name and address are free again.
    reborn = await sign_up(identity, username=account.username, email_address=account.email)
    assert reborn.user_id != account.user_id
