"""The whole suite as `make run` starts it: one process per service plus the gateway.

Ports are chosen free so a running `make run` does not get in the way; the database is
the session's throwaway cluster; stored images and mail go to a temporary folder.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support import fake_stripe as stripe_fake
from tests.support.fake_stripe import FakeStripe
from tests.support.settings import INTERNAL_SECRET
from tools.pgcluster import free_port
from tools.provision import ALL_SERVICES, provision
from tools.run import start_suite, stop_children

# Small limits so throttling can be shown with a handful of requests.
LOGIN_FAILURES_PER_ACCOUNT = 4


@dataclass
class Suite:
    base_url: str
    state: pathlib.Path
    env: dict[str, str]
    # The Stripe API billing talks to (a local fake; tests/support/fake_stripe.py).
    stripe: FakeStripe
    # The suite's own admin URL, for tests that set up reference data (tiers).
    admin_url: str


@pytest.fixture(scope="package")
def e2e_db(pg_admin_url: str) -> str:
    """A database of its own, provisioned like a fresh deployment: the suite's processes
    (and their outbox cursors) never meet the in-process servers of other tests."""
    url = make_url(pg_admin_url)
    own = url.set(database=f"{url.database}_e2e").render_as_string(hide_password=False)
    provision(own)
    return own


@pytest.fixture(scope="package")
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="package")
def suite(
    e2e_db: str, tmp_path_factory: pytest.TempPathFactory, fake_stripe: FakeStripe
) -> Iterator[Suite]:
    state = tmp_path_factory.mktemp("suite")
    env = dict(os.environ)
    env.update(
        {
            "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
            "PIXELSHOP_GATEWAY_PORT": str(free_port()),
            "PIXELSHOP_LOG_JSON": "true",
            "PIXELSHOP_IDENTITY_ARGON2_MEMORY_KIB": "1024",
            "PIXELSHOP_IDENTITY_ARGON2_TIME_COST": "1",
            "PIXELSHOP_IDENTITY_MAILBOX_DIR": str(state / "mailbox"),
            "PIXELSHOP_IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES": str(LOGIN_FAILURES_PER_ACCOUNT),
            "PIXELSHOP_ASSETS_STORAGE_DIR": str(state / "objects"),
            "PIXELSHOP_EVENT_POLL_SECONDS": "0.2",
            # Billing with Stripe on, against the fake (names exactly as Stripe's).
            "STRIPE_SECRET_KEY": stripe_fake.SECRET_KEY,
            "STRIPE_WEBHOOK_SECRET": stripe_fake.WEBHOOK_SECRET,
            "STRIPE_WEBHOOK_SECRET_PREVIOUS": stripe_fake.WEBHOOK_SECRET_PREVIOUS,
            "STRIPE_PRICE_PRO": stripe_fake.PRICE_PRO,
            "STRIPE_API_BASE": fake_stripe.base_url,
            "PIXELSHOP_BILLING_STRIPE_MAX_RETRIES": "0",
            "PIXELSHOP_BILLING_SWEEP_INTERVAL_SECONDS": "0.5",
        }
    )
    for service in ALL_SERVICES:
        env[f"PIXELSHOP_{service.upper()}_PORT"] = str(free_port())
    children, port = start_suite(e2e_db, env)
    try:
        yield Suite(f"http://127.0.0.1:{port}", state, env, fake_stripe, e2e_db)
    finally:
        stop_children(children)


@pytest.fixture
async def http(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=suite.base_url, timeout=30) as client:
        yield client


def new_credentials() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        "email": f"user-{tag}@example.com",
        "username": f"user_{tag}",
        "password": f"long enough {tag}",
    }


async def sign_up(http: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {**new_credentials(), **overrides}
    response = await http.post("/v1/auth:signUp", json=body)
    assert response.status_code == 200, response.text
    return {
        **response.json(),
        "password": body["password"],
        "email": body["email"],
        "username": body["username"],
    }


def bearer(account: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {account['accessToken']}"}
