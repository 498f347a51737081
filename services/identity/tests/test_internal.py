"""IdentityInternalService: closed without a service credential; tiers and the outbox
with one; and the set-tier CLI, which is how plans change while Stripe is off."""

from __future__ import annotations

from typing import Any

import grpc
import jwt
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from services.identity.settings import IdentitySettings
from services.identity.tests.cli import run_cli
from services.identity.tests.support import bearer, log_in, sign_up, unique_name
from tests.support.settings import INTERNAL_SECRET

BILLING = ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "billing").token()),)


def internal_calls(user_id: str) -> list[tuple[str, Any]]:
    return [
        ("SetUserTier", identity_pb2.SetUserTierRequest(user_id=user_id, tier_code="pro")),
        ("GetUserTier", identity_pb2.GetUserTierRequest(user_id=user_id)),
        ("ListEvents", identity_pb2.ListEventsRequest()),
    ]


async def test_internal_rpcs_need_a_service_credential(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    account = await sign_up(identity)
    forged = ServiceTokens("a-different-secret-of-32-characters!!", "billing").token()
    for metadata in (
        (),
        bearer(account.access_token),  # a user's token is not a service credential
        ((SERVICE_TOKEN_METADATA, forged),),
        ((SERVICE_TOKEN_METADATA, account.access_token),),
    ):
        for method, request in internal_calls(account.user_id):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await getattr(internal, method)(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
    tier = await internal.GetUserTier(
        identity_pb2.GetUserTierRequest(user_id=account.user_id), metadata=BILLING
    )
    assert tier.tier.code == "free"


async def test_set_user_tier_changes_the_tier_and_writes_one_event(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    account = await sign_up(identity)
    cursor = await latest_sequence(internal)
    request = identity_pb2.SetUserTierRequest(user_id=account.user_id, tier_code="pro")
    changed = await internal.SetUserTier(request, metadata=BILLING)
    assert changed.user.tier == "pro"
    await internal.SetUserTier(request, metadata=BILLING)  # billing may deliver twice

    tier = await internal.GetUserTier(
        identity_pb2.GetUserTierRequest(user_id=account.user_id), metadata=BILLING
    )
    assert tier.tier.code == "pro"
    assert tier.tier.limits.ai_edits_per_month == 1000
    assert tier.tier.features["public_presets"] is True

    events = await internal.ListEvents(
        identity_pb2.ListEventsRequest(after_sequence=cursor), metadata=BILLING
    )
    mine = [e for e in events.events if e.user_id == account.user_id]
    assert [e.type for e in mine] == ["user.tier_changed"]
    assert (mine[0].payload["from"], mine[0].payload["to"]) == ("free", "pro")

    # New access tokens carry the new tier.
    token = (await log_in(identity, account.username)).access_token
    assert jwt.decode(token, options={"verify_signature": False})["tier"] == "pro"


async def test_unknown_user_or_tier_is_not_found(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    account = await sign_up(identity)
    for request in (
        identity_pb2.SetUserTierRequest(user_id=account.user_id, tier_code="platinum"),
        identity_pb2.SetUserTierRequest(
            user_id="00000000-0000-4000-8000-000000000000", tier_code="pro"
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await internal.SetUserTier(request, metadata=BILLING)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def latest_sequence(internal: identity_pb2_grpc.IdentityInternalServiceStub) -> int:
    cursor = 0
    while True:
        page = await internal.ListEvents(
            identity_pb2.ListEventsRequest(after_sequence=cursor, page_size=500), metadata=BILLING
        )
        if not page.events:
            return cursor
        cursor = page.events[-1].sequence


async def test_list_events_pages_in_sequence_order(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    cursor = await latest_sequence(internal)
    for _ in range(3):
        await sign_up(identity)  # each writes a mail.sent event
    first = await internal.ListEvents(
        identity_pb2.ListEventsRequest(after_sequence=cursor, page_size=2), metadata=BILLING
    )
    second = await internal.ListEvents(
        identity_pb2.ListEventsRequest(after_sequence=first.events[-1].sequence, page_size=2),
        metadata=BILLING,
    )
    sequences = [e.sequence for e in [*first.events, *second.events]]
    assert len(first.events) == 2
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences) >= 3
    mail = first.events[0]
    assert mail.type == "mail.sent"
    assert set(mail.payload) == {"message_id", "to", "subject", "template"}


async def test_set_tier_cli(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
    identity_settings: IdentitySettings,
) -> None:
    account = await sign_up(identity, username=unique_name("Cli"))
    code, out, err = await run_cli(identity_settings, "set-tier", account.email.upper(), "pro")
    assert code == 0, err
    assert f"{account.username} ({account.user_id}) is on tier pro" in out
    tier = await internal.GetUserTier(
        identity_pb2.GetUserTierRequest(user_id=account.user_id), metadata=BILLING
    )
    assert tier.tier.code == "pro"

    code, out, err = await run_cli(identity_settings, "set-tier", account.username, "gold")
    assert code == 1
    assert "tier gold not found" in err
    code, out, err = await run_cli(identity_settings, "set-tier", unique_name("nobody"), "pro")
    assert code == 1
    assert "not found" in err
