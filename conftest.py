"""Fixtures every test folder shares: one real Postgres per test session, migrated.

The cluster is a throwaway one started from the machine's PostgreSQL binaries (see
tools/pgcluster.py), or the database PIXELSHOP_TEST_DATABASE_URL names (an admin URL;
its schemas are recreated). Every service's migrations run once, as `make run` runs them.
Tests isolate themselves by creating their own users and data.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator

import pytest

import runtime.grpc_io  # noqa: F401  (before any test loads grpc: ADR 0027)
from tests.support.settings import INTERNAL_SECRET

os.environ.setdefault("PIXELSHOP_INTERNAL_SECRET", INTERNAL_SECRET)

if os.environ.get("PIXELSHOP_RECORD_STATEMENTS"):
    # `python -m tools.hot_statements`: keep every statement the services issue.
    from tools import hot_statements

    hot_statements.install(os.environ["PIXELSHOP_RECORD_STATEMENTS"])


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests and fixtures run on uvloop, as every process of the suite does in
    production (ADR 0026): in-process servers meet the loop they will run on."""
    from runtime.loop import new_event_loop

    return {"uvloop": new_event_loop}


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    given = os.environ.get("PIXELSHOP_TEST_DATABASE_URL")
    if given:
        yield given
        return
    from tools.pgcluster import throwaway_cluster

    root = pathlib.Path(tempfile.mkdtemp(prefix="pixelshop-pg-"))
    with throwaway_cluster(root / "cluster") as cluster:
        yield cluster.admin_url("pixelshop_test")


@pytest.fixture(scope="session")
def migrated_db(pg_admin_url: str) -> str:
    """Every built service provisioned (roles, schemas, grants) and migrated to head."""
    from tools.provision import provision

    provision(pg_admin_url)
    return pg_admin_url
