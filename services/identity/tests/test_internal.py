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
from tests.support.settings import service_credential


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
        identity_pb2.GetUserTierRequest(user_id=account.user_id),
        metadata=service_credential("billing"),
    )
    assert tier.tier.code == "free"


async def test_set_user_tier_changes_the_tier_and_writes_one_event(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    account = await sign_up(identity)
    cursor = await latest_position(internal)
    request = identity_pb2.SetUserTierRequest(user_id=account.user_id, tier_code="pro")
    changed = await internal.SetUserTier(request, metadata=service_credential("billing"))
    assert changed.user.tier == "pro"
    # Billing may deliver twice.
    await internal.SetUserTier(request, metadata=service_credential("billing"))

    tier = await internal.GetUserTier(
        identity_pb2.GetUserTierRequest(user_id=account.user_id),
        metadata=service_credential("billing"),
    )
    assert tier.tier.code == "pro"
    assert tier.tier.limits.ai_edits_per_month == 1000
    assert tier.tier.features["public_presets"] is True

    events = await internal.ListEvents(
        identity_pb2.ListEventsRequest(after_xact_id=cursor[0], after_sequence=cursor[1]),
        metadata=service_credential("billing"),
    )
    mine = [e for e in events.events if e.user_id == account.user_id]
    assert [e.type for e in mine] == ["user.tier_changed"]
    assert (mine[0].payload["from"], mine[0].payload["to"]) == ("free", "pro")
    assert mine[0].payload["set_by"] == "billing"  # the caller's service credential

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
            await internal.SetUserTier(request, metadata=service_credential("billing"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def latest_position(
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> tuple[int, int]:
    """The end of the outbox as a follower sees it now."""
    page = identity_pb2.ListEventsResponse()
    while True:
        page = await internal.ListEvents(
            identity_pb2.ListEventsRequest(
                after_xact_id=page.next_xact_id, after_sequence=page.next_sequence, page_size=500
            ),
            metadata=service_credential("billing"),
        )
        if not page.events:
            return page.next_xact_id, page.next_sequence


async def test_list_events_pages_in_outbox_order_and_hands_out_only_cross_service_types(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
) -> None:
    cursor = await latest_position(internal)
    accounts = [await sign_up(identity) for _ in range(3)]  # each also requests a mail
    for account in accounts:
        await internal.SetUserTier(
            identity_pb2.SetUserTierRequest(user_id=account.user_id, tier_code="pro"),
            metadata=service_credential("billing"),
        )
    first = await internal.ListEvents(
        identity_pb2.ListEventsRequest(
            after_xact_id=cursor[0], after_sequence=cursor[1], page_size=2
        ),
        metadata=service_credential("billing"),
    )
    second = await internal.ListEvents(
        identity_pb2.ListEventsRequest(
            after_xact_id=first.next_xact_id, after_sequence=first.next_sequence, page_size=2
        ),
        metadata=service_credential("billing"),
    )
    events = [*first.events, *second.events]
    positions = [(e.xact_id, e.sequence) for e in events]
    assert len(first.events) == 2
    assert (first.next_xact_id, first.next_sequence) == positions[1]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert [e.user_id for e in events if e.type == "user.tier_changed"][:3] == [
        a.user_id for a in accounts
    ]
    # Mail is no cross-service event, and no event carries an address.
    assert {e.type for e in events} <= {"user.deleted", "user.tier_changed"}
    assert all(a.email not in str(e.payload) for e in events for a in accounts)

    only_deleted = await internal.ListEvents(
        identity_pb2.ListEventsRequest(
            after_xact_id=cursor[0], after_sequence=cursor[1], types=["user.deleted"]
        ),
        metadata=service_credential("billing"),
    )
    assert not [e for e in only_deleted.events if e.type != "user.deleted"]
    # Past the events of other types: the follower's cursor (and pruning) moves on.
    assert (only_deleted.next_xact_id, only_deleted.next_sequence) >= positions[-1]

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await internal.ListEvents(
            identity_pb2.ListEventsRequest(types=["mail.sent"]),
            metadata=service_credential("billing"),
        )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_set_tier_cli(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
    identity_settings: IdentitySettings,
) -> None:
    account = await sign_up(identity, username=unique_name("Cli"))
    cursor = await latest_position(internal)
    code, out, err = await run_cli(identity_settings, "set-tier", account.email.upper(), "pro")
    assert code == 0, err
    assert out.strip() == (
        f"{account.username} ({account.user_id}) is on tier pro; "
        "billing follows through the outbox (user.tier_changed)"
    )
    tier = await internal.GetUserTier(
        identity_pb2.GetUserTierRequest(user_id=account.user_id),
        metadata=service_credential("billing"),
    )
    assert tier.tier.code == "pro"
    # The event is how billing learns of it (ADR 0021): marked as the operator's change.
    events = await internal.ListEvents(
        identity_pb2.ListEventsRequest(after_xact_id=cursor[0], after_sequence=cursor[1]),
        metadata=service_credential("billing"),
    )
    mine = [e for e in events.events if e.user_id == account.user_id]
    assert [(e.type, e.payload["to"], e.payload["set_by"]) for e in mine] == [
        ("user.tier_changed", "pro", "operator")
    ]

    code, out, err = await run_cli(identity_settings, "set-tier", account.username, "gold")
    assert code == 1
    assert "tier gold not found" in err
    code, out, err = await run_cli(identity_settings, "set-tier", unique_name("nobody"), "pro")
    assert code == 1
    assert "not found" in err
