"""Access tokens that must not get in, and refresh-token rotation with reuse detection."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import Account, bearer, error_reason, sign_up


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def signing_key(admin_db: asyncpg.Connection) -> tuple[str, Ed25519PrivateKey]:
    """The key identity signs with right now, read behind its back."""
    row = await admin_db.fetchrow(
        "SELECT kid, private_key FROM identity.signing_keys"
        " WHERE private_key IS NOT NULL AND activated_at <= now()"
        " AND (retired_at IS NULL OR retired_at > now())"
        " ORDER BY activated_at DESC LIMIT 1"
    )
    assert row is not None
    key = load_pem_private_key(row["private_key"].encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return str(row["kid"]), key


def flip_last_character(encoded: str) -> str:
    return encoded[:-2] + ("A" if encoded[-2] != "A" else "B") + encoded[-1]


def claims_of(account: Account, **overrides: Any) -> dict[str, Any]:
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    now = int(time.time())
    claims.update({"iat": now, "exp": now + 600, **overrides})
    return claims


async def get_me(
    identity: identity_pb2_grpc.IdentityServiceStub, token: str
) -> identity_pb2.GetCurrentUserResponse:
    return await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(token)
    )


async def test_forged_access_tokens_are_unauthenticated(
    identity: identity_pb2_grpc.IdentityServiceStub, admin_db: asyncpg.Connection
) -> None:
    account = await sign_up(identity)
    kid, key = await signing_key(admin_db)
    # The harness can mint a token identity accepts: the rejections below are meaningful.
    genuine = jwt.encode(claims_of(account), key, algorithm="EdDSA", headers={"kid": kid})
    assert (await get_me(identity, genuine)).user.id == account.user_id

    header, payload, signature = account.access_token.split(".")
    tampered_claims = claims_of(account, tier="pro")
    forged = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims_of(account))}.",
        "foreign key, real kid": jwt.encode(
            claims_of(account),
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "unknown kid": jwt.encode(
            claims_of(account),
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": "00000000-0000-4000-8000-000000000000"},
        ),
        "HMAC with a guessable secret": jwt.encode(
            claims_of(account), "pixelshop" * 4, algorithm="HS256", headers={"kid": kid}
        ),
        "wrong audience": jwt.encode(
            claims_of(account, aud="someone-else"), key, algorithm="EdDSA", headers={"kid": kid}
        ),
        "wrong issuer": jwt.encode(
            claims_of(account, iss="someone-else"), key, algorithm="EdDSA", headers={"kid": kid}
        ),
        "expired": jwt.encode(
            claims_of(account, iat=int(time.time()) - 1000, exp=int(time.time()) - 100),
            key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "tampered payload": f"{header}.{b64(tampered_claims)}.{signature}",
        "tampered signature": f"{header}.{payload}.{flip_last_character(signature)}",
        "missing claims": jwt.encode(
            {k: v for k, v in claims_of(account).items() if k != "sid"},
            key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "not a JWT": "definitely-not-a-token",
    }
    for name, token in forged.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get_me(identity, token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, name

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await identity.GetCurrentUser(identity_pb2.GetCurrentUserRequest())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_refresh_rotates_and_reuse_revokes_the_session(
    identity: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    clock.freeze()
    account = await sign_up(identity)
    first = account.refresh_token
    second = (
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=first))
    ).refresh_token
    third_response = await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=second))
    third = third_response.refresh_token
    assert len({first, second, third}) == 3

    clock.advance(seconds=6)  # past the 5-second grace window
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=first))
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(reused.value) == "REFRESH_TOKEN_REUSED"

    # The whole session is gone: its live refresh token and its access tokens.
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=third))
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(revoked.value) == "REFRESH_TOKEN_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await get_me(identity, third_response.access_token)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grace_window_hands_a_lost_response_a_successor_of_the_current_token(
    identity: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    clock.freeze()
    account = await sign_up(identity)
    original = account.refresh_token
    lost = await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=original))

    clock.advance(seconds=4)  # within the window: the client retries with what it had
    retried = await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=original))
    assert retried.refresh_token not in (original, lost.refresh_token)
    assert (
        jwt.decode(retried.access_token, options={"verify_signature": False})["sid"]
        == jwt.decode(lost.access_token, options={"verify_signature": False})["sid"]
    )

    # The session still has exactly one live token: the retry's. It keeps working...
    clock.advance(seconds=10)
    following = await identity.Refresh(
        identity_pb2.RefreshRequest(refresh_token=retried.refresh_token)
    )
    # ...while the response that was "lost" holds a spent token: presenting it now, after
    # the window, is reuse, and ends the session (the safe side, if it was a thief's).
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=lost.refresh_token))
    assert error_reason(reused.value) == "REFRESH_TOKEN_REUSED"
    with pytest.raises(grpc.aio.AioRpcError):
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=following.refresh_token))


async def test_a_token_two_generations_old_is_reuse_even_within_the_window(
    identity: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    clock.freeze()
    account = await sign_up(identity)
    first = account.refresh_token
    second = await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=first))
    third = await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=second.refresh_token))
    # `second` was used, so whoever presents `first` did not just lose a response.
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=first))
    assert error_reason(reused.value) == "REFRESH_TOKEN_REUSED"
    with pytest.raises(grpc.aio.AioRpcError):
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=third.refresh_token))


async def test_concurrent_refreshes_with_one_token_all_succeed_leaving_one_live_token(
    identity: identity_pb2_grpc.IdentityServiceStub,
    admin_db: asyncpg.Connection,
    clock: AdjustableClock,
) -> None:
    clock.freeze()
    account = await sign_up(identity)
    results = await asyncio.gather(
        *(
            identity.Refresh(identity_pb2.RefreshRequest(refresh_token=account.refresh_token))
            for _ in range(5)
        )
    )
    # Two tabs (or a retry racing the original call) must not log the user out...
    assert len({result.refresh_token for result in results}) == 5
    live = await admin_db.fetch(
        "SELECT t.parent_id FROM identity.refresh_tokens t JOIN identity.sessions s"
        " ON s.id = t.session_id WHERE s.user_id = $1"
        " AND t.rotated_at IS NULL AND t.revoked_at IS NULL",
        uuid.UUID(account.user_id),
    )
    # ...and must not fork the session either.
    assert len(live) == 1
    # Any of the answers still works within the window (the client keeps whichever
    # arrived last); the session carries on with one live token.
    carried_on = await identity.Refresh(
        identity_pb2.RefreshRequest(refresh_token=results[0].refresh_token)
    )
    assert carried_on.refresh_token


async def test_expired_refresh_token_is_refused(
    identity: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    account = await sign_up(identity)
    clock.advance(days=31)
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=account.refresh_token))
    assert error_reason(expired.value) == "REFRESH_TOKEN_INVALID"
