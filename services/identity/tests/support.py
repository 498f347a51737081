"""What identity's tests share: signing up users, reading errors and mails.

Mail is sent by the server's mail worker after the request has answered, so the helpers
that read the mailbox wait for the mail to arrive (or for its request to be handled)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import pathlib
import re
import uuid
from dataclasses import dataclass

import asyncpg
import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

PASSWORD = "correct horse battery"


@dataclass
class Account:
    email: str
    username: str
    password: str
    user_id: str
    access_token: str
    refresh_token: str


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def sign_up(
    identity: identity_pb2_grpc.IdentityServiceStub,
    *,
    username: str | None = None,
    email_address: str | None = None,
    password: str = PASSWORD,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Account:
    username = username or unique_name()
    email_address = email_address or f"{username}@example.com"
    response = await identity.SignUp(
        identity_pb2.SignUpRequest(email=email_address, username=username, password=password),
        metadata=metadata,
    )
    return Account(
        email=response.user.email,
        username=response.user.username,
        password=password,
        user_id=response.user.id,
        access_token=response.access_token,
        refresh_token=response.refresh_token,
    )


async def log_in(
    identity: identity_pb2_grpc.IdentityServiceStub,
    login: str,
    password: str = PASSWORD,
    metadata: tuple[tuple[str, str], ...] = (),
) -> identity_pb2.LogInResponse:
    return await identity.LogIn(
        identity_pb2.LogInRequest(login=login, password=password), metadata=metadata
    )


def bearer(access_token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {access_token}"),)


def status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    found = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert found is not None, "the error carries no google.rpc.Status"
    return found


def error_reason(error: grpc.aio.AioRpcError) -> str:
    for detail in status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


def violated_field(error: grpc.aio.AioRpcError) -> str:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    for detail in status(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return bad_request.field_violations[0].field
    raise AssertionError("no BadRequest detail")


def retry_delay_seconds(error: grpc.aio.AioRpcError) -> int:
    for detail in status(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return retry.retry_delay.seconds
    raise AssertionError("no RetryInfo detail")


def mails_to(mailbox: pathlib.Path, address: str) -> list[email.message.EmailMessage]:
    """Mails to `address`, oldest first."""
    found = []
    for path in sorted(mailbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"] == address:
            assert isinstance(message, email.message.EmailMessage)
            found.append(message)
    return found


# Long enough for a loaded machine; only reached when the mail never comes.
MAIL_WAIT_SECONDS = 30.0


async def wait_for_mails(
    mailbox: pathlib.Path, address: str, template: str, count: int = 1
) -> list[email.message.EmailMessage]:
    """The mails of a kind to an address, once there are at least `count` of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAIL_WAIT_SECONDS
    while True:
        found = [m for m in mails_to(mailbox, address) if m["X-Pixelshop-Template"] == template]
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.02)


async def mail_requests_handled(admin_db: asyncpg.Connection, user_or_address: str) -> None:
    """Waits until the mail worker has handled every request for an address or user id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAIL_WAIT_SECONDS
    while loop.time() < deadline:
        waiting = await admin_db.fetchval(
            "SELECT count(*) FROM identity.mail_requests WHERE address = $1 OR user_id::text = $1",
            user_or_address,
        )
        if not waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"mail requests for {user_or_address} were not handled")


async def mailed_token(
    mailbox: pathlib.Path, address: str, template: str, *, count: int = 1
) -> str:
    """The token in the newest mail of a kind to an address, once `count` have come."""
    found = await wait_for_mails(mailbox, address, template, count)
    assert len(found) >= count, f"no {template} mail to {address}"
    body = found[-1].get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(r"token=([A-Za-z0-9_-]+)", body.get_content())
    assert match, "the mail carries no token link"
    return match.group(1)
