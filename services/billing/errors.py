"""Errors specific to billing; each still is a runtime DomainError with a gRPC code."""

from __future__ import annotations

from runtime.errors import FailedPrecondition, InvalidArgument, Unavailable


class BillingNotConfigured(FailedPrecondition):
    """No Stripe key: plans change through identity's `set-tier` command instead."""

    def __init__(self) -> None:
        super().__init__("billing is not configured", reason="BILLING_NOT_CONFIGURED")


class StripeUnavailable(Unavailable):
    """Stripe (or the way to it) failed; nothing was changed and the call may be retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="STRIPE_UNAVAILABLE")


class BadWebhook(InvalidArgument):
    """A webhook we must not act on: bad signature or a body that is not a Stripe event."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, reason="INVALID_WEBHOOK")
