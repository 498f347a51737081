"""Settings of the billing service, read once at start-up.

Service settings come from `PIXELSHOP_BILLING_*`; the Stripe ones keep the names Stripe's
own tooling uses, exactly (SPEC section 2): `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`,
`STRIPE_WEBHOOK_SECRET_PREVIOUS` (accepted too while the signing secret is rotated),
`STRIPE_PRICE_PRO` and `STRIPE_API_BASE`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import ClassVar

from runtime.config import ServiceSettings
from runtime.settings import Secret, load_settings

ENV_PREFIX = "PIXELSHOP_BILLING_"

# Environment name -> settings field. Read under these names only.
STRIPE_VARIABLES = {
    "STRIPE_SECRET_KEY": "stripe_secret_key",
    "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secret",
    "STRIPE_WEBHOOK_SECRET_PREVIOUS": "stripe_webhook_secret_previous",
    "STRIPE_PRICE_PRO": "stripe_price_pro",
    "STRIPE_API_BASE": "stripe_api_base",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BillingSettings(ServiceSettings):
    service_name: ClassVar[str] = "billing"

    port: int = 50055

    # Stripe (off while the secret key is empty: checkout answers "billing is not
    # configured" and identity's `set-tier` command changes plans instead).
    stripe_secret_key: Secret = Secret("")
    stripe_webhook_secret: Secret = Secret("")
    stripe_webhook_secret_previous: Secret = Secret("")
    stripe_price_pro: str = ""
    # Empty: api.stripe.com. Points the real client at an emulator or a test fake.
    stripe_api_base: str = ""
    # Seconds one Stripe request may take, and how often the client retries a failure.
    stripe_timeout_seconds: float = 10.0
    stripe_max_retries: int = 2
    # Seconds a webhook's signature timestamp may differ from now.
    webhook_tolerance_seconds: int = 300

    # Where Checkout and the portal send the browser when the request names no URL.
    checkout_success_url: str = "http://localhost:5173/billing/success"
    checkout_cancel_url: str = "http://localhost:5173/billing"
    portal_return_url: str = "http://localhost:5173/billing"

    # A reservation nobody commits or releases returns its capacity after this long.
    reservation_ttl_seconds: int = 900
    # The longest a caller may ask a reservation to live.
    reservation_max_ttl_seconds: int = 86_400
    # How often the sweeper expires reservations and relays tier changes (0 = never).
    sweep_interval_seconds: float = 30.0
    # Rows one sweep handles per step.
    sweep_batch_size: int = 500
    # How long a user's tier (the limits) is cached; billing forgets it at once when it
    # changes the tier itself.
    tier_cache_seconds: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.stripe_secret_key and not self.stripe_webhook_secret:
            problems.append("STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set")
        if self.stripe_secret_key and not self.stripe_price_pro:
            problems.append("STRIPE_PRICE_PRO is required when STRIPE_SECRET_KEY is set")
        if self.stripe_api_base and not self.stripe_api_base.startswith(("http://", "https://")):
            problems.append("STRIPE_API_BASE must be an http(s) URL")
        if self.stripe_timeout_seconds <= 0:
            problems.append(f"{ENV_PREFIX}STRIPE_TIMEOUT_SECONDS must be positive")
        if not 0 <= self.stripe_max_retries <= 5:
            problems.append(f"{ENV_PREFIX}STRIPE_MAX_RETRIES must be 0-5")
        if not 1 <= self.webhook_tolerance_seconds <= 3600:
            problems.append(f"{ENV_PREFIX}WEBHOOK_TOLERANCE_SECONDS must be 1-3600")
        if not 1 <= self.reservation_ttl_seconds <= self.reservation_max_ttl_seconds:
            problems.append(
                f"{ENV_PREFIX}RESERVATION_TTL_SECONDS must be 1-RESERVATION_MAX_TTL_SECONDS"
            )
        for name in ("sweep_interval_seconds", "tier_cache_seconds"):
            if getattr(self, name) < 0:
                problems.append(f"{ENV_PREFIX}{name.upper()} must not be negative")
        if self.sweep_batch_size < 1:
            problems.append(f"{ENV_PREFIX}SWEEP_BATCH_SIZE must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def stripe_configured(self) -> bool:
        return bool(self.stripe_secret_key)

    @property
    def tier_prices(self) -> dict[str, str]:
        """Tier code -> Stripe price id, for the tiers that can be bought."""
        return {"pro": self.stripe_price_pro} if self.stripe_price_pro else {}

    @property
    def webhook_secrets(self) -> list[str]:
        secrets = [self.stripe_webhook_secret, self.stripe_webhook_secret_previous]
        return [secret.reveal() for secret in secrets if secret]


def load(environ: Mapping[str, str] | None = None) -> BillingSettings:
    env = dict(os.environ if environ is None else environ)
    for name, field in STRIPE_VARIABLES.items():
        env.pop(f"{ENV_PREFIX}{field.upper()}", None)
        if name in env:
            env[f"{ENV_PREFIX}{field.upper()}"] = env[name]
    return load_settings(BillingSettings, ENV_PREFIX, env)
