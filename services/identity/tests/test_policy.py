"""Which RPCs are anonymous and which need a user's access token (SPEC section 6)."""

from __future__ import annotations

import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.api import ANONYMOUS_METHODS, IDENTITY_SERVICE

USER_METHODS = {
    "SendVerificationEmail": identity_pb2.SendVerificationEmailRequest(),
    "GetCurrentUser": identity_pb2.GetCurrentUserRequest(),
    "UpdateCurrentUser": identity_pb2.UpdateCurrentUserRequest(display_name="x"),
    "DeleteCurrentUser": identity_pb2.DeleteCurrentUserRequest(password="whatever it is"),
    "ChangePassword": identity_pb2.ChangePasswordRequest(
        current_password="whatever it is", new_password="whatever it becomes"
    ),
    "ListSessions": identity_pb2.ListSessionsRequest(),
    "RevokeSession": identity_pb2.RevokeSessionRequest(
        session_id="00000000-0000-4000-8000-000000000000"
    ),
}


def test_every_method_is_either_anonymous_or_needs_a_user() -> None:
    service = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
    every = {f"/{IDENTITY_SERVICE}/{method.name}" for method in service.methods}
    user = {f"/{IDENTITY_SERVICE}/{name}" for name in USER_METHODS}
    assert ANONYMOUS_METHODS | user == every
    assert not ANONYMOUS_METHODS & user


@pytest.mark.parametrize("method", sorted(USER_METHODS))
async def test_user_methods_refuse_calls_without_a_token(
    identity: identity_pb2_grpc.IdentityServiceStub, method: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(identity, method)(USER_METHODS[method])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_public_reads_need_no_token(identity: identity_pb2_grpc.IdentityServiceStub) -> None:
    assert (await identity.ListTiers(identity_pb2.ListTiersRequest())).tiers
    assert (await identity.GetJwks(identity_pb2.GetJwksRequest())).keys
