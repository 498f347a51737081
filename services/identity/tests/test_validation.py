"""Every field is checked at the edge: INVALID_ARGUMENT naming the field, never INTERNAL,
never a trace or SQL in the answer."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from services.identity.tests.support import PASSWORD, Account, bearer, sign_up, violated_field
from tests.support.settings import INTERNAL_SECRET

NUL = "a\x00b"
TOKEN = "x" * 43  # shaped like ours, matches nothing


def sign_up_request(**fields: str) -> identity_pb2.SignUpRequest:
    values = {"email": "valid@example.com", "username": "valid_name", "password": PASSWORD}
    return identity_pb2.SignUpRequest(**{**values, **fields})


# (RPC, request, field named in the error); `who` says which credential the call carries.
CASES: list[tuple[str, str, Callable[[], Any], str]] = [
    ("anyone", "SignUp", lambda: sign_up_request(email=""), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email=f"x{NUL}@example.com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="x" * 250 + "@example.com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="not-an-email"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="a@localhost"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="a b@example.com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="@example.com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="a@@example.com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(email="a@example..com"), "email"),
    ("anyone", "SignUp", lambda: sign_up_request(username=""), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(username="ab"), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(username="x" * 33), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(username="two words"), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(username="at@sign"), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(username=NUL * 2), "username"),
    ("anyone", "SignUp", lambda: sign_up_request(password=""), "password"),
    ("anyone", "SignUp", lambda: sign_up_request(password="too short"), "password"),
    ("anyone", "SignUp", lambda: sign_up_request(password="x" * 129), "password"),
    ("anyone", "SignUp", lambda: sign_up_request(password="x" * 100_000), "password"),
    ("anyone", "SignUp", lambda: sign_up_request(password=PASSWORD + NUL), "password"),
    ("anyone", "SignUp", lambda: sign_up_request(display_name="x" * 65), "display_name"),
    ("anyone", "SignUp", lambda: sign_up_request(display_name=NUL), "display_name"),
    ("anyone", "SignUp", lambda: sign_up_request(display_name="line\nbreak"), "display_name"),
    # The probe: a right-to-left override and a zero-width space in display text.
    (
        "anyone",
        "SignUp",
        lambda: sign_up_request(display_name="admin\u202egnp.exe"),
        "display_name",
    ),
    ("anyone", "SignUp", lambda: sign_up_request(display_name="ad\u200bmin"), "display_name"),
    ("anyone", "LogIn", lambda: identity_pb2.LogInRequest(password=PASSWORD), "login"),
    (
        "anyone",
        "LogIn",
        lambda: identity_pb2.LogInRequest(login=NUL, password=PASSWORD),
        "login",
    ),
    (
        "anyone",
        "LogIn",
        lambda: identity_pb2.LogInRequest(login="x" * 255, password=PASSWORD),
        "login",
    ),
    ("anyone", "LogIn", lambda: identity_pb2.LogInRequest(login="someone"), "password"),
    (
        "anyone",
        "LogIn",
        lambda: identity_pb2.LogInRequest(login="someone", password=NUL),
        "password",
    ),
    (
        "anyone",
        "LogIn",
        lambda: identity_pb2.LogInRequest(login="someone", password="x" * 129),
        "password",
    ),
    ("anyone", "Refresh", lambda: identity_pb2.RefreshRequest(), "refresh_token"),
    (
        "anyone",
        "Refresh",
        lambda: identity_pb2.RefreshRequest(refresh_token=NUL),
        "refresh_token",
    ),
    (
        "anyone",
        "Refresh",
        lambda: identity_pb2.RefreshRequest(refresh_token="x" * 257),
        "refresh_token",
    ),
    ("anyone", "LogOut", lambda: identity_pb2.LogOutRequest(), "refresh_token"),
    ("anyone", "LogOut", lambda: identity_pb2.LogOutRequest(refresh_token=NUL), "refresh_token"),
    (
        "anyone",
        "RequestPasswordReset",
        lambda: identity_pb2.RequestPasswordResetRequest(),
        "email",
    ),
    (
        "anyone",
        "RequestPasswordReset",
        lambda: identity_pb2.RequestPasswordResetRequest(email="nobody"),
        "email",
    ),
    (
        "anyone",
        "RequestPasswordReset",
        lambda: identity_pb2.RequestPasswordResetRequest(email=NUL),
        "email",
    ),
    (
        "anyone",
        "ResetPassword",
        lambda: identity_pb2.ResetPasswordRequest(new_password=PASSWORD),
        "token",
    ),
    (
        "anyone",
        "ResetPassword",
        lambda: identity_pb2.ResetPasswordRequest(token="x" * 257, new_password=PASSWORD),
        "token",
    ),
    (
        "anyone",
        "ResetPassword",
        lambda: identity_pb2.ResetPasswordRequest(token=TOKEN, new_password="short"),
        "new_password",
    ),
    (
        "anyone",
        "ResetPassword",
        lambda: identity_pb2.ResetPasswordRequest(token=TOKEN, new_password=PASSWORD + NUL),
        "new_password",
    ),
    # A well-formed token that matches nothing is still the token's fault.
    (
        "anyone",
        "ResetPassword",
        lambda: identity_pb2.ResetPasswordRequest(token=TOKEN, new_password=PASSWORD),
        "token",
    ),
    ("anyone", "VerifyEmail", lambda: identity_pb2.VerifyEmailRequest(), "token"),
    ("anyone", "VerifyEmail", lambda: identity_pb2.VerifyEmailRequest(token=NUL), "token"),
    ("anyone", "VerifyEmail", lambda: identity_pb2.VerifyEmailRequest(token="x" * 257), "token"),
    ("anyone", "VerifyEmail", lambda: identity_pb2.VerifyEmailRequest(token=TOKEN), "token"),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(display_name=""),
        "display_name",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(display_name="x" * 65),
        "display_name",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(display_name=NUL),
        "display_name",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(display_name="\u2067Support\u2069"),
        "display_name",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(username="a"),
        "username",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(email="nope"),
        "email",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(email=NUL),
        "email",
    ),
    (
        "user",
        "UpdateCurrentUser",
        lambda: identity_pb2.UpdateCurrentUserRequest(
            update_mask=field_mask_pb2.FieldMask(paths=["password_hash"])
        ),
        "update_mask",
    ),
    ("user", "DeleteCurrentUser", lambda: identity_pb2.DeleteCurrentUserRequest(), "password"),
    (
        "user",
        "DeleteCurrentUser",
        lambda: identity_pb2.DeleteCurrentUserRequest(password=NUL),
        "password",
    ),
    (
        "user",
        "ChangePassword",
        lambda: identity_pb2.ChangePasswordRequest(new_password="a fine new password"),
        "current_password",
    ),
    (
        "user",
        "ChangePassword",
        lambda: identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="x"),
        "new_password",
    ),
    (
        "user",
        "ChangePassword",
        lambda: identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NUL * 9),
        "new_password",
    ),
    ("user", "ListSessions", lambda: identity_pb2.ListSessionsRequest(page_size=-1), "page_size"),
    (
        "user",
        "ListSessions",
        lambda: identity_pb2.ListSessionsRequest(page_token="bm90IGEgdG9rZW4"),
        "page_token",
    ),
    (
        "user",
        "ListSessions",
        lambda: identity_pb2.ListSessionsRequest(page_token="x" * 3000),
        "page_token",
    ),
    ("user", "RevokeSession", lambda: identity_pb2.RevokeSessionRequest(), "session_id"),
    (
        "user",
        "RevokeSession",
        lambda: identity_pb2.RevokeSessionRequest(session_id="not-a-uuid"),
        "session_id",
    ),
    (
        "user",
        "RevokeSession",
        lambda: identity_pb2.RevokeSessionRequest(session_id=f"{{{uuid.uuid4()}}}"),
        "session_id",
    ),
    (
        "user",
        "RevokeSession",
        lambda: identity_pb2.RevokeSessionRequest(session_id=NUL),
        "session_id",
    ),
    (
        "service",
        "SetUserTier",
        lambda: identity_pb2.SetUserTierRequest(tier_code="pro"),
        "user_id",
    ),
    (
        "service",
        "SetUserTier",
        lambda: identity_pb2.SetUserTierRequest(user_id="42", tier_code="pro"),
        "user_id",
    ),
    (
        "service",
        "SetUserTier",
        lambda: identity_pb2.SetUserTierRequest(user_id=str(uuid.uuid4())),
        "tier_code",
    ),
    (
        "service",
        "SetUserTier",
        lambda: identity_pb2.SetUserTierRequest(user_id=str(uuid.uuid4()), tier_code="x" * 33),
        "tier_code",
    ),
    (
        "service",
        "SetUserTier",
        lambda: identity_pb2.SetUserTierRequest(user_id=str(uuid.uuid4()), tier_code=NUL),
        "tier_code",
    ),
    ("service", "GetUserTier", lambda: identity_pb2.GetUserTierRequest(), "user_id"),
    (
        "service",
        "GetUserTier",
        lambda: identity_pb2.GetUserTierRequest(user_id="not-a-uuid"),
        "user_id",
    ),
    (
        "service",
        "ListEvents",
        lambda: identity_pb2.ListEventsRequest(after_sequence=-1),
        "after_sequence",
    ),
    ("service", "ListEvents", lambda: identity_pb2.ListEventsRequest(page_size=-5), "page_size"),
]


@pytest.fixture(scope="module")
async def caller(identity: identity_pb2_grpc.IdentityServiceStub) -> Account:
    return await sign_up(identity)


@pytest.mark.parametrize(
    ("who", "method", "request_factory", "field"),
    CASES,
    ids=[f"{method}-{field}-{n}" for n, (_, method, _, field) in enumerate(CASES)],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
    caller: Account,
    who: str,
    method: str,
    request_factory: Callable[[], Any],
    field: str,
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()
    stub: Any = identity
    if who == "user":
        metadata = bearer(caller.access_token)
    elif who == "service":
        stub = internal
        metadata = ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "billing").token()),)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, method)(request_factory(), metadata=metadata)
    assert violated_field(refused.value) == field
    details = refused.value.details() or ""
    assert details.startswith(f"{field}: ")
    for leak in ("Traceback", "sqlalchemy", "asyncpg", "SELECT", "INSERT", "UPDATE"):
        assert leak not in details
