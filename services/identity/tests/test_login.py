"""Log-in: one answer for unknown accounts and wrong passwords; throttling per account
and per address, counted in Postgres, refused with RESOURCE_EXHAUSTED and a RetryInfo."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2_grpc

from services.identity.tests.conftest import (
    AdjustableClock,
    identity_settings_for,
    identity_with,
)
from services.identity.tests.support import (
    error_reason,
    log_in,
    retry_delay_seconds,
    sign_up,
    status,
    unique_name,
)

ACCOUNT_LIMIT = 3
IP_LIMIT = 5
ACCOUNT_WINDOW = 900
IP_WINDOW = 60


def from_address(address: str) -> tuple[tuple[str, str], ...]:
    # What the gateway forwards; the interceptor takes the last hop as the client.
    return (("x-forwarded-for", address),)


def fresh_address() -> str:
    suffix = int(unique_name("")[:6], 16)
    return f"10.{suffix >> 16 & 255}.{suffix >> 8 & 255}.{suffix & 255}"


@pytest.fixture(scope="module")
async def strict(
    migrated_db: str, mailbox: pathlib.Path, clock: AdjustableClock
) -> AsyncIterator[identity_pb2_grpc.IdentityServiceStub]:
    settings = identity_settings_for(
        migrated_db,
        mailbox,
        login_account_max_failures=ACCOUNT_LIMIT,
        login_account_window_seconds=ACCOUNT_WINDOW,
        login_ip_max_failures=IP_LIMIT,
        login_ip_window_seconds=IP_WINDOW,
    )
    async with identity_with(settings, clock) as stub:
        yield stub


async def test_unknown_account_and_wrong_password_get_the_identical_error(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity)
    with pytest.raises(grpc.aio.AioRpcError) as wrong_password:
        await log_in(identity, account.username, "not the password")
    with pytest.raises(grpc.aio.AioRpcError) as unknown_user:
        await log_in(identity, unique_name("ghost"), "not the password")
    with pytest.raises(grpc.aio.AioRpcError) as unknown_email:
        await log_in(identity, f"{unique_name('ghost')}@example.com", "not the password")
    for error in (wrong_password.value, unknown_user.value, unknown_email.value):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "invalid login or password"
    # Byte for byte: the same status, the same details.
    assert status(wrong_password.value) == status(unknown_user.value) == status(unknown_email.value)


async def test_account_throttle_with_retry_delay_and_no_permanent_lock_out(
    strict: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    clock.freeze()
    account = await sign_up(strict)
    for _ in range(ACCOUNT_LIMIT):  # each from another address: only the account limit counts
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await log_in(strict, account.username, "wrong password", from_address(fresh_address()))
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Even the right password is refused now; the answer says how long to back off.
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await log_in(strict, account.email, account.password, from_address(fresh_address()))
    assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(throttled.value) == "LOGIN_THROTTLED"
    delay = retry_delay_seconds(throttled.value)
    assert 1 <= delay <= ACCOUNT_WINDOW

    clock.advance(seconds=delay)
    await log_in(strict, account.email, account.password, from_address(fresh_address()))


async def test_unknown_accounts_are_throttled_like_known_ones(
    strict: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    ghost = unique_name("ghost")
    for _ in range(ACCOUNT_LIMIT):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await log_in(strict, ghost, "wrong password", from_address(fresh_address()))
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await log_in(strict, ghost, "wrong password", from_address(fresh_address()))
    assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_address_throttle(
    strict: identity_pb2_grpc.IdentityServiceStub, clock: AdjustableClock
) -> None:
    clock.freeze()
    address = fresh_address()
    for _ in range(IP_LIMIT):  # a different account each time: only the address limit counts
        with pytest.raises(grpc.aio.AioRpcError):
            await log_in(strict, unique_name("ghost"), "wrong password", from_address(address))
    account = await sign_up(strict)
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await log_in(strict, account.username, account.password, from_address(address))
    assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_delay_seconds(throttled.value)
    assert 1 <= delay <= IP_WINDOW
    # Another address is not affected.
    await log_in(strict, account.username, account.password, from_address(fresh_address()))

    clock.advance(seconds=delay)
    await log_in(strict, account.username, account.password, from_address(address))


async def test_address_throttle_counts_an_ipv6_client_by_its_slash_64(
    strict: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    # Anyone with IPv6 holds a /64: 2^64 addresses, one fresh address per guess.
    suffix = unique_name("")[:4]
    network = f"2001:db8:{suffix}:1"
    for host in range(1, IP_LIMIT + 1):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await log_in(
                strict, unique_name("ghost"), "wrong password", from_address(f"{network}::{host}")
            )
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    account = await sign_up(strict)
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await log_in(strict, account.username, account.password, from_address(f"{network}::99"))
    assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The neighbouring /64 is someone else.
    await log_in(
        strict, account.username, account.password, from_address(f"2001:db8:{suffix}:2::1")
    )


async def test_a_successful_log_in_clears_the_account_failures(
    strict: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(strict)
    for _ in range(3):
        for _ in range(ACCOUNT_LIMIT - 1):
            with pytest.raises(grpc.aio.AioRpcError):
                await log_in(strict, account.username, "wrong", from_address(fresh_address()))
        await log_in(strict, account.username, account.password, from_address(fresh_address()))


async def test_a_parallel_burst_cannot_slip_past_the_limit(
    strict: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(strict)
    attempts = [
        log_in(strict, account.username, f"guess {n}", from_address(fresh_address()))
        for n in range(10)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    codes = sorted(
        result.code().name for result in results if isinstance(result, grpc.aio.AioRpcError)
    )
    assert (
        codes == ["RESOURCE_EXHAUSTED"] * (10 - ACCOUNT_LIMIT) + ["UNAUTHENTICATED"] * ACCOUNT_LIMIT
    )
