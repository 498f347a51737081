"""The one adapter to Stripe: stripe-python's StripeClient, its async calls, our errors.

Every call first asks `runtime.db.refuse_remote_call` (no Stripe request ever waits with a
transaction open, ADR 0011), carries an idempotency key when it creates something, and
turns Stripe's failures into `StripeUnavailable` (503 over HTTP: Stripe, or the network to
it, failed; the caller may retry) with a message a person can read.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe

from runtime.db import refuse_remote_call
from services.billing.errors import StripeUnavailable
from services.billing.settings import BillingSettings

log = logging.getLogger("pixelshop.billing.stripe")


class StripeApi:
    def __init__(self, settings: BillingSettings) -> None:
        base = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_secret_key.reveal(),
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=settings.stripe_max_retries,
            http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds),
        )

    async def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_remote_call(f"Stripe {what}")
        try:
            return await call(*args, **kwargs)
        except stripe.APIConnectionError as error:
            log.warning("stripe unreachable", extra={"call": what})
            raise StripeUnavailable(
                "the payment provider cannot be reached right now; try again in a moment"
            ) from error
        except stripe.StripeError as error:
            log.warning(
                "stripe refused a call",
                extra={"call": what, "status": error.http_status, "code": error.code},
            )
            raise StripeUnavailable(
                f"the payment provider could not {what} ({error.user_message or 'error'}); "
                "try again in a moment"
            ) from error

    async def create_customer(self, user_id: str, idempotency_key: str) -> str:
        customer = await self._call(
            "create the customer",
            self._client.v1.customers.create_async,
            params={"metadata": {"user_id": user_id}},
            options={"idempotency_key": idempotency_key},
        )
        return str(customer.id)

    async def create_checkout_session(
        self,
        *,
        customer_id: str,
        user_id: str,
        tier: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> str:
        metadata = {"user_id": user_id, "tier": tier}
        session = await self._call(
            "start the checkout",
            self._client.v1.checkout.sessions.create_async,
            params={
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": user_id,
                "line_items": [{"price": price_id, "quantity": 1}],
                "metadata": metadata,
                "subscription_data": {"metadata": metadata},
                "success_url": success_url,
                "cancel_url": cancel_url,
            },
            options={"idempotency_key": idempotency_key},
        )
        return str(session.url)

    async def create_portal_session(
        self, *, customer_id: str, return_url: str, idempotency_key: str
    ) -> str:
        session = await self._call(
            "open the billing portal",
            self._client.v1.billing_portal.sessions.create_async,
            params={"customer": customer_id, "return_url": return_url},
            options={"idempotency_key": idempotency_key},
        )
        return str(session.url)

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription's latest state as a plain dict; None when Stripe has none."""
        refuse_remote_call("Stripe read the subscription")
        try:
            found = await self._client.v1.subscriptions.retrieve_async(subscription_id)
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise StripeUnavailable(
                "the payment provider could not read the subscription; try again"
            ) from error
        except stripe.StripeError as error:
            raise StripeUnavailable(
                "the payment provider cannot be reached right now; try again in a moment"
            ) from error
        return found.to_dict()

    async def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> None:
        """Cancels at once; a subscription Stripe already ended (or never had) is fine."""
        refuse_remote_call("Stripe cancel the subscription")
        try:
            await self._client.v1.subscriptions.cancel_async(
                subscription_id, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            if error.http_status in (400, 404):  # already canceled, or gone
                return
            raise StripeUnavailable("the payment provider could not cancel; try again") from error
        except stripe.StripeError as error:
            raise StripeUnavailable("the payment provider cannot be reached; try again") from error
