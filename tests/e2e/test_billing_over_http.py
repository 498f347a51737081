"""Issue 8 end to end: usage, subscriptions, checkout and Stripe webhooks through the
gateway, with every service running as its own process and billing talking to a local
fake Stripe through the real stripe client."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc
from sqlalchemy.engine import make_url

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from tests.e2e.conftest import Suite
from tests.support.api import Account, bearer, sign_up, upload, usage
from tests.support.fake_stripe import (
    checkout_completed,
    invoice_event,
    signature,
    subscription_event,
)
from tests.support.images import image_bytes
from tests.support.settings import INTERNAL_SECRET
from tests.support.waiting import eventually

WEBHOOK = "/v1/billing/stripe:webhook"


async def post_event(
    http: httpx.AsyncClient, payload: bytes, header: str | None = None
) -> httpx.Response:
    return await http.post(
        WEBHOOK,
        content=payload,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": signature(payload) if header is None else header,
        },
    )


async def subscription(http: httpx.AsyncClient, account: dict[str, Any]) -> dict[str, Any]:
    response = await http.get("/v1/billing/subscription", headers=bearer(account))
    assert response.status_code == 200, response.text
    return dict(response.json()["subscription"])


async def profile_tier(http: httpx.AsyncClient, account: Account) -> str:
    response = await http.get("/v1/users/me", headers=bearer(account))
    return str(response.json()["user"]["tier"])


async def tier_becomes(http: httpx.AsyncClient, account: Account, tier: str) -> None:
    """Identity learns a tier change through billing's outbox: wait for the profile."""

    async def reached() -> bool:
        return await profile_tier(http, account) == tier

    await eventually(
        reached, f"the profile's tier to become {tier}", state=lambda: profile_tier(http, account)
    )


def new_subscription_id() -> str:
    return f"sub_{uuid.uuid4().hex[:14]}"


async def test_usage_and_subscription_of_a_new_free_user(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    metrics = await usage(http, account)
    assert metrics["USAGE_METRIC_AI_EDITS"]["limit"] == "25"
    assert metrics["USAGE_METRIC_STORAGE_BYTES"]["limit"] == str(1024**3)
    assert metrics["USAGE_METRIC_PROJECTS"]["limit"] == "20"
    assert "periodStart" in metrics["USAGE_METRIC_AI_EDITS"]
    assert "periodStart" not in metrics["USAGE_METRIC_STORAGE_BYTES"]
    assert await subscription(http, account) == {"tier": "free", "status": "none"}
    anonymous = await http.get("/v1/billing/usage")
    assert anonymous.status_code == 401


async def test_checkout_and_portal_over_http(http: httpx.AsyncClient, suite: Suite) -> None:
    account = await sign_up(http)
    unknown = await http.post(
        "/v1/billing:checkout", json={"tier": "gold"}, headers=bearer(account)
    )
    assert unknown.status_code == 400
    assert unknown.json()["message"].startswith("tier: ")
    free = await http.post("/v1/billing:checkout", json={"tier": "free"}, headers=bearer(account))
    assert free.status_code == 400
    started = await http.post("/v1/billing:checkout", json={"tier": "pro"}, headers=bearer(account))
    assert started.status_code == 200, started.text
    assert started.json()["url"].startswith("https://checkout.stripe.test/")
    user_id = account["user"]["id"]
    sessions = [
        c
        for c in suite.stripe.calls("POST", "/v1/checkout/sessions")
        if c.params.get("client_reference_id") == user_id
    ]
    assert sessions[0].params["mode"] == "subscription"
    portal = await http.post("/v1/billing:portal", json={}, headers=bearer(account))
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith("https://billing.stripe.test/")
    suite.stripe.failing = 500
    try:
        down = await http.post("/v1/billing:portal", json={}, headers=bearer(account))
    finally:
        suite.stripe.failing = 0
    assert down.status_code == 503
    assert "payment provider" in down.json()["message"]


async def test_a_signed_webhook_applies_and_reaches_identity(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    account = await sign_up(http)
    user_id = account["user"]["id"]
    sub_id = new_subscription_id()
    created = suite.stripe.put_subscription(sub_id, status="active", user_id=user_id)
    payload = subscription_event("customer.subscription.created", created)
    first = await post_event(http, payload)
    assert first.status_code == 200, first.text
    assert first.json() == {"processed": True}
    again = await post_event(http, payload)
    assert again.status_code == 200
    assert again.json() == {}  # processed: false, the default, omitted
    seen = await subscription(http, account)
    assert (seen["tier"], seen["status"]) == ("pro", "active")
    assert "currentPeriodEnd" in seen
    # Identity learns the tier through billing's outbox; new limits apply.
    await tier_becomes(http, account, "pro")
    assert (await usage(http, account))["USAGE_METRIC_AI_EDITS"]["limit"] == "1000"


@pytest.mark.parametrize(
    "tamper", ["body", "wrong-secret", "too-old", "missing", "malformed", "not-json"]
)
async def test_unverifiable_webhooks_answer_400_and_change_nothing(
    http: httpx.AsyncClient, suite: Suite, tamper: str
) -> None:
    account = await sign_up(http)
    created = suite.stripe.put_subscription(
        new_subscription_id(), status="active", user_id=account["user"]["id"]
    )
    payload = subscription_event("customer.subscription.created", created)
    header: str | None = signature(payload)
    if tamper == "body":
        payload = payload.replace(b'"active"', b'"trialing"')
    elif tamper == "wrong-secret":
        header = signature(payload, "whsec_not_ours")
    elif tamper == "too-old":
        header = signature(payload, timestamp=int(time.time()) - 400)
    elif tamper == "missing":
        response = await http.post(
            WEBHOOK, content=payload, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        header = None
    elif tamper == "malformed":
        header = "t=yesterday,v1="
    else:
        payload = b"<xml>not json</xml>"
        header = signature(payload)
    if tamper != "missing":
        response = await post_event(http, payload, header)
        assert response.status_code == 400, response.text
    # Had anything been recorded, the correctly signed event would now be a duplicate.
    assert (await subscription(http, account))["tier"] == "free"
    genuine = subscription_event("customer.subscription.created", created)
    applied = await post_event(http, genuine)
    assert applied.json() == {"processed": True}


async def test_out_of_order_final_cancel_and_past_due(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    account = await sign_up(http)
    user_id = account["user"]["id"]
    sub_id = new_subscription_id()
    active = suite.stripe.put_subscription(sub_id, status="active", user_id=user_id)
    customer = active["customer"]
    # subscription.created before checkout.session.completed: still Pro.
    await post_event(http, subscription_event("customer.subscription.created", active))
    await post_event(http, checkout_completed(user_id, sub_id, customer))
    assert (await subscription(http, account))["tier"] == "pro"
    # A failed payment: past due (the plan stays while Stripe retries).
    suite.stripe.put_subscription(sub_id, status="past_due", user_id=user_id, customer=customer)
    await post_event(http, invoice_event("invoice.payment_failed", sub_id, customer))
    seen = await subscription(http, account)
    assert (seen["tier"], seen["status"]) == ("pro", "past_due")
    # Deleted, then a late update: canceled stays canceled.
    late = subscription_event("customer.subscription.updated", dict(active))
    canceled = suite.stripe.put_subscription(
        sub_id, status="canceled", user_id=user_id, customer=customer
    )
    await post_event(http, subscription_event("customer.subscription.deleted", canceled))
    suite.stripe.put_subscription(sub_id, status="active", user_id=user_id, customer=customer)
    await post_event(http, late)
    seen = await subscription(http, account)
    assert (seen["tier"], seen["status"]) == ("free", "canceled")
    await tier_becomes(http, account, "free")


async def test_uploading_past_the_storage_limit_is_429_and_stores_nothing(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    first_image = image_bytes("PNG", (320, 240), "teal")
    second_image = image_bytes("PNG", (320, 240), "orange")
    limit = max(len(first_image), len(second_image)) + 100
    assert len(first_image) + len(second_image) > limit  # one fits, never both
    account = await sign_up(http)
    await put_on_a_tiny_tier(suite, account["user"]["id"], storage_bytes=limit)

    uploaded = await upload(http, account, first_image, filename="one.png")
    assert uploaded.status_code == 200, uploaded.text
    objects_before = suite.s3.keys()
    refused = await upload(http, account, second_image, filename="two.png")
    assert refused.status_code == 429, refused.text
    assert "storage limit reached" in refused.json()["message"]
    assert "over the limit" in refused.json()["message"]
    listed = await http.get("/v1/assets", headers=bearer(account))
    assert [a["id"] for a in listed.json()["assets"]] == [uploaded.json()["asset"]["id"]]
    assert suite.s3.keys() == objects_before
    storage = (await usage(http, account))["USAGE_METRIC_STORAGE_BYTES"]
    assert storage["used"] == str(len(first_image))
    assert storage.get("reserved", "0") == "0"

    # Deleting the asset gives its bytes back: the second image fits now.
    deleted = await http.delete(
        f"/v1/assets/{uploaded.json()['asset']['id']}", headers=bearer(account)
    )
    assert deleted.status_code == 200, deleted.text
    assert (await usage(http, account))["USAGE_METRIC_STORAGE_BYTES"].get("used", "0") == "0"
    again = await upload(http, account, second_image, filename="two.png")
    assert again.status_code == 200, again.text


async def test_another_users_token_sees_nothing_of_mine(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    mine = await sign_up(http)
    theirs = await sign_up(http)
    uploaded = await upload(http, mine, image_bytes("PNG", (64, 64)), filename="mine.png")
    assert uploaded.status_code == 200
    assert (await usage(http, mine))["USAGE_METRIC_STORAGE_BYTES"]["used"] != "0"
    assert "used" not in (await usage(http, theirs))["USAGE_METRIC_STORAGE_BYTES"]
    # The public API takes no user id at all; internal RPCs are not routed.
    internal = await http.post(
        "/pixelshop.billing.v1.BillingInternalService/ReserveUsage",
        content=json.dumps({"userId": mine["user"]["id"], "amount": "1"}),
        headers={**bearer(theirs), "Content-Type": "application/json"},
    )
    assert internal.status_code == 404


async def put_on_a_tiny_tier(suite: Suite, user_id: str, *, storage_bytes: int) -> None:
    """A tier with a storage limit a test can reach, as reference data identity serves."""
    code = f"tiny_{uuid.uuid4().hex[:8]}"
    url = make_url(suite.admin_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute(
            "INSERT INTO identity.tiers (code, name, ai_edits_per_month, storage_bytes, "
            "max_projects, max_upload_bytes, max_pixels, sort_order) "
            "VALUES ($1, 'Tiny', 2, $2, 1, 15728640, 40000000, 99)",
            code,
            storage_bytes,
        )
    finally:
        await connection.close()
    address = f"127.0.0.1:{suite.env['PIXELSHOP_IDENTITY_PORT']}"
    token = ServiceTokens(INTERNAL_SECRET, "billing").token()
    async with grpc.aio.insecure_channel(address) as channel:
        await identity_pb2_grpc.IdentityInternalServiceStub(channel).SetUserTier(
            identity_pb2.SetUserTierRequest(user_id=user_id, tier_code=code),
            metadata=((SERVICE_TOKEN_METADATA, token),),
            timeout=10,
        )


async def test_identitys_set_tier_records_the_tier_in_billing_too(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    from tools.run import child_environment, runnable_services

    account = await sign_up(http)
    env = child_environment(suite.admin_url, runnable_services(), suite.env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.identity",
        "set-tier",
        account["email"],
        "pro",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "billing follows through the outbox" in out.decode()

    async def recorded() -> bool:
        seen = await subscription(http, account)
        return (seen["tier"], seen["status"]) == ("pro", "active")

    # Billing records it from identity's user.tier_changed event (ADR 0021), a poll later.
    await eventually(
        recorded, "billing to record the pro tier", state=lambda: subscription(http, account)
    )
    assert (await usage(http, account))["USAGE_METRIC_AI_EDITS"]["limit"] == "1000"
