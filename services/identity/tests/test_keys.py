"""The JWKS, and key rotation that keeps old public keys while their tokens may live."""

from __future__ import annotations

import datetime
import uuid

import asyncpg
import jwt
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import public_key_from_jwk
from services.identity.keys import PUBLISHED_AFTER_RETIREMENT
from services.identity.server import build
from services.identity.settings import IdentitySettings
from services.identity.tests.cli import run_cli
from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import log_in, sign_up


async def published_kids(identity: identity_pb2_grpc.IdentityServiceStub) -> set[str]:
    jwks = await identity.GetJwks(identity_pb2.GetJwksRequest())
    return {key.kid for key in jwks.keys}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_jwks_verifies_issued_tokens(identity: identity_pb2_grpc.IdentityServiceStub) -> None:
    account = await sign_up(identity)
    jwks = await identity.GetJwks(identity_pb2.GetJwksRequest())
    by_kid = {key.kid: key for key in jwks.keys}
    published = by_kid[kid_of(account.access_token)]
    assert (published.kty, published.crv, published.alg, published.use) == (
        "OKP",
        "Ed25519",
        "EdDSA",
        "sig",
    )
    public_key = public_key_from_jwk({"kty": published.kty, "crv": published.crv, "x": published.x})
    assert public_key is not None
    claims = jwt.decode(
        account.access_token, public_key, algorithms=["EdDSA"], audience="pixelshop"
    )
    assert claims["sub"] == account.user_id


async def test_rotation_publishes_first_and_keeps_old_keys_while_their_tokens_live(
    identity: identity_pb2_grpc.IdentityServiceStub,
    identity_settings: IdentitySettings,
    clock: AdjustableClock,
) -> None:
    account = await sign_up(identity)
    old_kid = kid_of(account.access_token)

    code, out, err = await run_cli(identity_settings, "rotate-signing-key")
    assert code == 0, err
    new_kid = out.split()[3]
    assert new_kid != old_kid
    # Published at once, but not signing yet: verifiers get to cache it first.
    assert {old_kid, new_kid} <= await published_kids(identity)
    assert kid_of((await log_in(identity, account.username)).access_token) == old_kid

    lead = identity_settings.key_publish_lead_seconds
    clock.advance(seconds=lead + 1)
    assert kid_of((await log_in(identity, account.username)).access_token) == new_kid
    # The old key retired a moment ago: tokens it signed may live up to 15 more minutes.
    assert {old_kid, new_kid} <= await published_kids(identity)

    clock.advance(seconds=PUBLISHED_AFTER_RETIREMENT.total_seconds())
    published = await published_kids(identity)
    assert new_kid in published
    assert old_kid not in published


async def test_rotate_now_signs_with_the_new_key_at_once(
    identity: identity_pb2_grpc.IdentityServiceStub, identity_settings: IdentitySettings
) -> None:
    account = await sign_up(identity)
    code, out, err = await run_cli(identity_settings, "rotate-signing-key", "--now")
    assert code == 0, err
    new_kid = out.split()[3]
    fresh = await log_in(identity, account.username)
    assert kid_of(fresh.access_token) == new_kid
    # identity's own verifier finds a key it has never seen in its table.
    me = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(),
        metadata=(("authorization", f"Bearer {fresh.access_token}"),),
    )
    assert me.user.id == account.user_id


async def test_keys_rotate_by_age_and_retired_private_keys_are_erased(
    identity_settings: IdentitySettings,
    clock: AdjustableClock,
    admin_db: asyncpg.Connection,
) -> None:
    components = build(identity_settings, clock=clock)
    housekeeping, database = components.housekeeping, components.database
    count = "SELECT count(*) FROM identity.signing_keys"
    try:
        before = await admin_db.fetchval(count)
        async with database.transaction() as session:
            await housekeeping.rotate_keys(session)
        assert await admin_db.fetchval(count) == before  # the newest key is young

        # Move to just past the moment the newest key (maybe a pending one) turns due.
        newest_activation = await admin_db.fetchval(
            "SELECT max(activated_at) FROM identity.signing_keys"
        )
        due = newest_activation + datetime.timedelta(days=identity_settings.key_rotation_days)
        clock.advance(seconds=(due - clock()).total_seconds() + 1)
        async with database.transaction() as session:
            await housekeeping.rotate_keys(session)
        assert await admin_db.fetchval(count) == before + 1
        newest = await admin_db.fetchrow(
            "SELECT kid, activated_at FROM identity.signing_keys ORDER BY activated_at DESC LIMIT 1"
        )
        assert newest is not None
        assert newest["activated_at"] > clock()  # published ahead of signing

        clock.advance(seconds=identity_settings.key_publish_lead_seconds + 1)
        async with database.transaction() as session:
            await housekeeping.rotate_keys(session)
        lingering = await admin_db.fetchval(
            "SELECT count(*) FROM identity.signing_keys"
            " WHERE retired_at <= $1 AND private_key IS NOT NULL",
            clock(),
        )
        assert lingering == 0
        assert await admin_db.fetchval(
            "SELECT private_key IS NOT NULL FROM identity.signing_keys WHERE kid = $1",
            uuid.UUID(str(newest["kid"])),
        )
    finally:
        await components.close()


def test_retired_keys_stay_published_for_the_longest_token_life() -> None:
    assert datetime.timedelta(minutes=15) <= PUBLISHED_AFTER_RETIREMENT
