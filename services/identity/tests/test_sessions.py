"""Listing and revoking one's own sessions; another user's session is NOT_FOUND."""

from __future__ import annotations

import uuid

import grpc
import jwt
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.tests.support import bearer, log_in, sign_up, violated_field


def session_id_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_list_sessions_pages_newest_first_and_marks_the_current_one(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity)
    logins = [
        await log_in(identity, account.username, metadata=(("x-forwarded-for", f"192.0.2.{n}"),))
        for n in range(1, 4)
    ]
    caller = logins[-1]
    listed: list[identity_pb2.Session] = []
    page_token = ""
    pages = 0
    while True:
        page = await identity.ListSessions(
            identity_pb2.ListSessionsRequest(page_size=3, page_token=page_token),
            metadata=bearer(caller.access_token),
        )
        listed.extend(page.sessions)
        pages += 1
        page_token = page.next_page_token
        if not page_token:
            break
    assert pages == 2
    expected = [session_id_of(r.access_token) for r in reversed(logins)]
    expected.append(session_id_of(account.access_token))
    assert [s.id for s in listed] == expected
    assert [s.current for s in listed] == [True, False, False, False]
    assert listed[0].ip_address == "192.0.2.3"
    assert listed[0].user_agent  # grpc-python names itself
    assert listed[0].expire_time.seconds > listed[0].create_time.seconds


async def test_page_tokens_belong_to_their_owner_and_cannot_be_forged(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    owner = await sign_up(identity)
    await log_in(identity, owner.username)
    page = await identity.ListSessions(
        identity_pb2.ListSessionsRequest(page_size=1), metadata=bearer(owner.access_token)
    )
    assert page.next_page_token
    stranger = await sign_up(identity)
    for token in (page.next_page_token, page.next_page_token[:-3] + "xyz", "%%%"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity.ListSessions(
                identity_pb2.ListSessionsRequest(page_token=token),
                metadata=bearer(stranger.access_token),
            )
        assert violated_field(refused.value) == "page_token"


async def test_revoke_session(identity: identity_pb2_grpc.IdentityServiceStub) -> None:
    account = await sign_up(identity)
    laptop = await log_in(identity, account.username)
    await identity.RevokeSession(
        identity_pb2.RevokeSessionRequest(session_id=session_id_of(laptop.access_token)),
        metadata=bearer(account.access_token),
    )
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=laptop.refresh_token))
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    remaining = await identity.ListSessions(
        identity_pb2.ListSessionsRequest(), metadata=bearer(account.access_token)
    )
    assert [s.id for s in remaining.sessions] == [session_id_of(account.access_token)]
    # Revoking it again is fine (idempotent).
    await identity.RevokeSession(
        identity_pb2.RevokeSessionRequest(session_id=session_id_of(laptop.access_token)),
        metadata=bearer(account.access_token),
    )


async def test_another_users_session_is_not_found(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    victim = await sign_up(identity)
    attacker = await sign_up(identity)
    for session_id in (session_id_of(victim.access_token), str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await identity.RevokeSession(
                identity_pb2.RevokeSessionRequest(session_id=session_id),
                metadata=bearer(attacker.access_token),
            )
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert hidden.value.details() == f"session {session_id} not found"
    # The victim's session is untouched.
    await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=victim.refresh_token))
