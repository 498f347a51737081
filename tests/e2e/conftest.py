"""The whole suite as `make run` starts it: one process per service plus the gateway.

Ports are chosen free so a running `make run` does not get in the way; the database is
the session's throwaway cluster; assets stores its objects in S3 (moto's server, in this
process, driven by real boto3 in the assets process, through a proxy that can hold object
writes: tests/support/holding_proxy.py) as in production, and mail goes to a temporary
folder. (`make run` itself, with the directory store, is test_make_run.py.)
The HTTP helpers the tests share are tests/support/api.py.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import make_url

from tests.support import fake_stripe as stripe_fake
from tests.support.fake_stripe import FakeStripe
from tests.support.holding_proxy import HoldingProxy
from tests.support.settings import INTERNAL_SECRET
from tools.provision import ALL_SERVICES, provision
from tools.run import start_suite, stop_children, suite_ports

# Small limits so throttling can be shown with a handful of requests.
LOGIN_FAILURES_PER_ACCOUNT = 4
BUCKET = "pixelshop-e2e"
S3_REGION = "us-east-1"
# moto takes any credentials; boto3 (here and in the assets process) must find some.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Suite:
    base_url: str
    state: pathlib.Path
    env: dict[str, str]
    # The Stripe API billing talks to (a local fake; tests/support/fake_stripe.py).
    stripe: FakeStripe
    # The suite's own admin URL, for tests that set up reference data (tiers).
    admin_url: str
    # The S3 bucket assets stores in, read behind its back.
    s3: S3Bucket


@dataclass
class S3Bucket:
    # moto itself, where the test reads behind the service's back.
    endpoint: str
    # What assets talks to: forwards to moto, and holds object writes when told.
    proxy: HoldingProxy
    name: str = BUCKET

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def keys(self, containing: str = "") -> list[str]:
        """Every object key in the bucket (with `containing` in it, when given)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        found = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return sorted(k for k in found if containing in k)


@pytest.fixture(scope="package")
def s3() -> Iterator[S3Bucket]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    proxy = HoldingProxy(endpoint).start()
    bucket = S3Bucket(endpoint, proxy)
    bucket.client().create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        proxy.stop()
        server.stop()


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
    e2e_db: str, tmp_path_factory: pytest.TempPathFactory, fake_stripe: FakeStripe, s3: S3Bucket
) -> Iterator[Suite]:
    state = tmp_path_factory.mktemp("suite")
    env = dict(os.environ)
    env.update(
        {
            "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
            "PIXELSHOP_LOG_JSON": "true",
            "PIXELSHOP_IDENTITY_ARGON2_MEMORY_KIB": "1024",
            "PIXELSHOP_IDENTITY_ARGON2_TIME_COST": "1",
            "PIXELSHOP_IDENTITY_MAILBOX_DIR": str(state / "mailbox"),
            "PIXELSHOP_IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES": str(LOGIN_FAILURES_PER_ACCOUNT),
            "PIXELSHOP_ASSETS_STORAGE_BACKEND": "s3",
            "PIXELSHOP_ASSETS_S3_BUCKET": s3.name,
            "PIXELSHOP_ASSETS_S3_REGION": S3_REGION,
            "PIXELSHOP_ASSETS_S3_ENDPOINT_URL": s3.proxy.url,
            "PIXELSHOP_ASSETS_S3_PATH_STYLE": "true",
            **S3_CREDENTIALS,
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
    env.update(suite_ports(ALL_SERVICES))
    children, port = start_suite(e2e_db, env)
    try:
        yield Suite(f"http://127.0.0.1:{port}", state, env, fake_stripe, e2e_db, s3)
    finally:
        stop_children(children)


@pytest.fixture
async def http(suite: Suite) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=suite.base_url, timeout=30) as client:
        yield client
