"""Checkout and portal through the real stripe client against the local fake Stripe."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import httpx
import pytest
from pixelshop.billing.v1 import billing_pb2

from gateway.server import create_app, start
from gateway.settings import DEFAULT_UPSTREAMS, GatewaySettings
from services.billing.settings import BillingSettings
from services.billing.tests.conftest import Billing, Metadata
from tests.support.fake_stripe import PRICE_PRO, FakeStripe


def customer_of(stripe_api: FakeStripe, user: uuid.UUID) -> str:
    (found,) = [
        c["id"] for c in stripe_api.customers.values() if c["metadata"] == {"user_id": str(user)}
    ]
    return str(found)


def checkout(tier: str = "pro", **urls: str) -> billing_pb2.CreateCheckoutSessionRequest:
    return billing_pb2.CreateCheckoutSessionRequest(tier=tier, **urls)


async def test_without_a_stripe_key_billing_is_not_configured(
    billing: Billing, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    _, token = new_user()
    for call in (
        billing.public.CreateCheckoutSession(checkout(), metadata=token),
        billing.public.CreatePortalSession(
            billing_pb2.CreatePortalSessionRequest(), metadata=token
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == "billing is not configured"


async def test_checkout_creates_the_customer_once_and_reuses_it(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    user, token = new_user()
    first = await paid.public.CreateCheckoutSession(
        checkout(success_url="https://app.example/ok", cancel_url="https://app.example/no"),
        metadata=token,
    )
    second = await paid.public.CreateCheckoutSession(checkout(), metadata=token)
    assert first.url.startswith("https://checkout.stripe.test/")
    assert second.url != first.url

    customers = stripe_api.calls("POST", "/v1/customers")
    assert len(customers) == 1
    assert customers[0].params["metadata[user_id]"] == str(user)
    assert customers[0].idempotency_key
    sessions = stripe_api.calls("POST", "/v1/checkout/sessions")
    assert len(sessions) == 2
    params = sessions[0].params
    customer_id = customer_of(stripe_api, user)
    assert params["mode"] == "subscription"
    assert params["customer"] == customer_id
    assert sessions[1].params["customer"] == customer_id
    assert params["line_items[0][price]"] == PRICE_PRO
    assert params["line_items[0][quantity]"] == "1"
    assert params["client_reference_id"] == str(user)
    assert params["metadata[user_id]"] == str(user)
    assert params["subscription_data[metadata][user_id]"] == str(user)
    assert params["success_url"] == "https://app.example/ok"
    assert params["cancel_url"] == "https://app.example/no"
    assert all(call.idempotency_key for call in sessions)
    assert sessions[0].idempotency_key != sessions[1].idempotency_key


async def test_the_same_idempotency_key_makes_one_session(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    _, token = new_user()
    keyed = (*token, ("idempotency-key", "checkout-click-1"))
    first = await paid.public.CreateCheckoutSession(checkout(), metadata=keyed)
    again = await paid.public.CreateCheckoutSession(checkout(), metadata=keyed)
    assert again.url == first.url
    keys = {call.idempotency_key for call in stripe_api.calls("POST", "/v1/checkout/sessions")}
    assert len(keys) == 1


async def test_keys_that_share_a_200_character_prefix_are_two_keys(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    """Keys are taken whole (they were cut at 200 characters, so two clicks with
    different keys could be answered with one session)."""
    user, token = new_user()
    prefix = "click-" + "p" * 194
    one, other = prefix + "-one", prefix + "-two"
    first = await paid.public.CreateCheckoutSession(
        checkout(), metadata=(*token, ("idempotency-key", one))
    )
    second = await paid.public.CreateCheckoutSession(
        checkout(), metadata=(*token, ("idempotency-key", other))
    )
    again = await paid.public.CreateCheckoutSession(
        checkout(), metadata=(*token, ("idempotency-key", one))
    )
    assert first.url != second.url
    assert again.url == first.url
    sessions = [
        call
        for call in stripe_api.calls("POST", "/v1/checkout/sessions")
        if call.params.get("client_reference_id") == str(user)
    ]
    assert len({call.idempotency_key for call in sessions}) == 2


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("k" * 256, "Idempotency-Key: must be 1-255 printable ASCII characters"),
        ("", "Idempotency-Key: must be 1-255 printable ASCII characters"),
    ],
    ids=["too-long", "empty"],
)
async def test_a_bad_idempotency_key_is_refused_naming_the_header(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    key: str,
    message: str,
) -> None:
    user, token = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.CreateCheckoutSession(
            checkout(), metadata=(*token, ("idempotency-key", key))
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == message
    assert not [
        call
        for call in stripe_api.calls("POST", "/v1/customers")
        if call.params.get("metadata[user_id]") == str(user)
    ]
    # A key of 255 is taken.
    await paid.public.CreateCheckoutSession(
        checkout(), metadata=(*token, ("idempotency-key", "k" * 255))
    )


@pytest.mark.parametrize(
    ("tier", "user_tier", "needle"),
    [
        ("gold", "free", "unknown tier"),
        ("free", "free", "cannot be bought"),
        ("pro", "pro", "already on the pro tier"),
        ("", "free", "is required"),
    ],
)
async def test_tiers_that_cannot_be_bought_name_the_field(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    tier: str,
    user_tier: str,
    needle: str,
) -> None:
    _, token = new_user(user_tier)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.CreateCheckoutSession(checkout(tier), metadata=token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("tier: ")
    assert needle in (refused.value.details() or "")
    assert stripe_api.requests == []


async def test_bad_urls_name_the_field(
    paid: Billing, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    _, token = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.CreateCheckoutSession(
            checkout(success_url="javascript:alert(1)"), metadata=token
        )
    assert (refused.value.details() or "").startswith("success_url: ")


async def test_portal_needs_a_customer_then_opens(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    user, token = new_user()
    portal = billing_pb2.CreatePortalSessionRequest(return_url="https://app.example/billing")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.CreatePortalSession(portal, metadata=token)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await paid.public.CreateCheckoutSession(checkout(), metadata=token)
    opened = await paid.public.CreatePortalSession(portal, metadata=token)
    assert opened.url.startswith("https://billing.stripe.test/")
    call = stripe_api.calls("POST", "/v1/billing_portal/sessions")[0]
    assert call.params["customer"] == customer_of(stripe_api, user)
    assert call.params["return_url"] == "https://app.example/billing"
    assert call.idempotency_key


@pytest.mark.parametrize("failure", ["error", "timeout"])
async def test_stripe_failures_are_unavailable_with_a_readable_message(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    failure: str,
) -> None:
    _, token = new_user()
    if failure == "error":
        stripe_api.failing = 500
    else:
        stripe_api.delay = 1.5  # the client's timeout is 1 s
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.CreateCheckoutSession(checkout(), metadata=token)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "payment provider" in (refused.value.details() or "")
    assert "try again" in (refused.value.details() or "")
    stripe_api.reset()
    # Nothing was half-recorded: the next attempt creates the customer and the session.
    await paid.public.CreateCheckoutSession(checkout(), metadata=token)


async def test_a_crash_after_creating_the_customer_reuses_it_on_retry(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    """Between Stripe creating the customer and our row: the retry's idempotency key
    answers the same customer, so a user never gets two."""
    from runtime.workflow import SimulatedCrash, crash_at
    from services.billing.server import build

    user, token = new_user()
    components = build(stripe_settings)
    try:
        with crash_at("checkout.customer_created"), pytest.raises(SimulatedCrash):
            await components.workflows.checkout(
                user,
                "pro",
                success_url="https://a.example",
                cancel_url="https://a.example",
                request_key="",
            )
    finally:
        await components.close()
    await paid.public.CreateCheckoutSession(checkout(), metadata=token)
    # This user's (a timed-out call of an earlier test may land after its reset).
    created = [
        call
        for call in stripe_api.calls("POST", "/v1/customers")
        if call.params.get("metadata[user_id]") == str(user)
    ]
    assert len(created) == 2
    assert created[0].idempotency_key == created[1].idempotency_key
    customer_of(stripe_api, user)  # exactly one customer carries the user id


async def test_a_too_long_idempotency_key_over_http_is_a_400_naming_the_header(
    paid: Billing, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    """Through the Python gateway (which forwards the header as metadata, as Envoy does)
    to this billing server: the header is refused whole, never cut to fit."""
    _, token = new_user()
    # Only billing is called; the other services' routes point at nothing.
    upstreams = {service: "127.0.0.1:1" for service in DEFAULT_UPSTREAMS}
    upstreams["billing"] = f"127.0.0.1:{paid.server.port}"
    settings = GatewaySettings(port=0, upstreams=upstreams)
    runner, port = await start(create_app(settings), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            headers = {"Authorization": token[0][1]}
            refused = await http.post(
                "/v1/billing:checkout",
                json={"tier": "pro"},
                headers={**headers, "Idempotency-Key": "k" * 256},
            )
            taken = await http.post(
                "/v1/billing:checkout",
                json={"tier": "pro"},
                headers={**headers, "Idempotency-Key": "k" * 255},
            )
    finally:
        await runner.cleanup()
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == (
        "Idempotency-Key: must be 1-255 printable ASCII characters"
    )
    violations = [
        violation
        for detail in refused.json()["details"]
        for violation in detail.get("fieldViolations", [])
    ]
    assert [v["field"] for v in violations] == ["Idempotency-Key"]
    assert taken.status_code == 200, taken.text
    assert taken.json()["url"].startswith("https://checkout.stripe.test/")
