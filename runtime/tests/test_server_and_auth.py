"""The shared server bootstrap and interceptor, on a real grpc.aio server.

A demo servicer speaks identity's protos: one anonymous method, one user method, one
internal method; tokens come from FakeIdentity's JWKS over gRPC, like in production.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.clients import PeerChannel
from runtime.config import ServiceSettings
from runtime.context import current_principal, current_request_id, current_service_caller
from runtime.errors import InvalidArgument, NotFound
from runtime.interceptors import AuthPolicy, Encoded
from runtime.peers.identity import IdentityClient
from runtime.server import Registration, RunningServer, jwks_verifier, start_server
from runtime.settings import Secret
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import INTERNAL_SECRET

PUBLIC = "pixelshop.identity.v1.IdentityService"
UNKNOWN_FIELD = b"\x98\x06\x07"  # field 99, varint 7
INTERNAL = "pixelshop.identity.v1.IdentityInternalService"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"


class DemoPublic(identity_pb2_grpc.IdentityServiceServicer):
    async def ListTiers(self, request: Any, context: Any) -> identity_pb2.ListTiersResponse:
        return identity_pb2.ListTiersResponse(tiers=[identity_pb2.Tier(code=current_request_id())])

    async def GetCurrentUser(self, request: Any, context: Any) -> Any:
        principal = current_principal()
        return identity_pb2.GetCurrentUserResponse(
            user=identity_pb2.User(id=str(principal.user_id), tier=principal.tier)
        )

    async def UpdateCurrentUser(self, request: Any, context: Any) -> Any:
        if request.HasField("username"):
            raise InvalidArgument("username", "must be at least 3 characters")
        if request.HasField("email"):
            raise NotFound("user")
        raise RuntimeError("SELECT secret FROM users -- must never reach a client")

    async def RevokeSession(self, request: Any, context: Any) -> Any:
        if request.session_id == "timeout":
            raise TimeoutError  # an OSError, as a dead connection's errors are
        raise ConnectionResetError("the database went away")

    async def ListSessions(self, request: Any, context: Any) -> Encoded:
        # Serialized by the handler itself, with a field this proto does not know (99):
        # what arrives is these bytes, not a message parsed and encoded again.
        message = identity_pb2.ListSessionsResponse(
            sessions=[identity_pb2.Session(id=str(current_principal().user_id))]
        )
        return Encoded(message.SerializeToString() + UNKNOWN_FIELD)


class DemoInternal(identity_pb2_grpc.IdentityInternalServiceServicer):
    async def GetUserTier(self, request: Any, context: Any) -> Any:
        return identity_pb2.GetUserTierResponse(
            tier=identity_pb2.Tier(code=current_service_caller().name)
        )


@pytest.fixture(scope="module")
async def fake_identity() -> AsyncIterator[FakeIdentity]:
    fake = await FakeIdentity().start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def demo(
    fake_identity: FakeIdentity,
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    settings = DemoSettings(internal_secret=Secret(INTERNAL_SECRET), port=0, log_json=False)
    tokens = ServiceTokens(INTERNAL_SECRET, "demo")
    identity = IdentityClient(PeerChannel(fake_identity.address, tokens))
    running = await start_server(
        settings,
        [
            Registration(
                PUBLIC, DemoPublic(), identity_pb2_grpc.add_IdentityServiceServicer_to_server
            ),
            Registration(
                INTERNAL,
                DemoInternal(),
                identity_pb2_grpc.add_IdentityInternalServiceServicer_to_server,
            ),
        ],
        AuthPolicy(
            user_services=frozenset({PUBLIC}),
            internal_services=frozenset({INTERNAL}),
            anonymous_methods=frozenset({f"/{PUBLIC}/ListTiers"}),
        ),
        jwks_verifier(settings, identity.jwks),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, channel
    await channel.close()
    await running.stop(0)


def _stub(demo: tuple[RunningServer, grpc.aio.Channel]) -> identity_pb2_grpc.IdentityServiceStub:
    return identity_pb2_grpc.IdentityServiceStub(demo[1])


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in trailers")


async def test_anonymous_method_and_request_id(demo: Any) -> None:
    reply = await _stub(demo).ListTiers(
        identity_pb2.ListTiersRequest(), metadata=(("x-request-id", "req-123"),)
    )
    assert reply.tiers[0].code == "req-123"


async def test_user_method_with_a_valid_token(demo: Any, fake_identity: FakeIdentity) -> None:
    user_id, token = fake_identity.new_user("pro")
    reply = await _stub(demo).GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert reply.user.id == str(user_id)
    assert reply.user.tier == "pro"


async def test_an_answer_its_handler_serialized_is_sent_as_it_is(
    demo: Any, fake_identity: FakeIdentity
) -> None:
    user_id, token = fake_identity.new_user("free")
    call = demo[1].unary_unary(f"/{PUBLIC}/ListSessions")  # no deserializer: the raw bytes
    raw = await call(b"", metadata=(("authorization", f"Bearer {token}"),))
    assert raw.endswith(UNKNOWN_FIELD)
    reply = identity_pb2.ListSessionsResponse.FromString(raw)
    assert [session.id for session in reply.sessions] == [str(user_id)]
    # The interceptor still authenticates it like any other user method.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(b"")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _forged(fake: FakeIdentity, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "tier": "pro",
        "iat": now,
        "exp": now + 600,
        "iss": "pixelshop",
        "aud": "pixelshop",
        "jti": "j",
    }
    claims.update(changes.pop("claims", {}))
    key = changes.pop("key", fake.key)
    algorithm = changes.pop("algorithm", "EdDSA")
    headers = {"kid": changes.pop("kid", fake.kid)}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _none_token(fake: FakeIdentity) -> str:
    header = jwt.utils.base64url_encode(
        b'{"alg":"none","typ":"JWT","kid":"%s"}' % fake.kid.encode()
    )
    body = jwt.utils.base64url_encode(
        b'{"sub":"%s","sid":"%s","tier":"pro","iat":1,"exp":9999999999,"iss":"pixelshop",'
        b'"aud":"pixelshop","jti":"x"}' % (str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode())
    )
    return f"{header.decode()}.{body.decode()}."


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(_none_token, id="alg-none"),
        pytest.param(lambda f: _forged(f, key=Ed25519PrivateKey.generate()), id="foreign-key"),
        pytest.param(lambda f: _forged(f, claims={"aud": "someone-else"}), id="wrong-audience"),
        pytest.param(lambda f: _forged(f, claims={"iss": "evil"}), id="wrong-issuer"),
        pytest.param(lambda f: _forged(f, claims={"exp": int(time.time()) - 5}), id="expired"),
        pytest.param(lambda f: _forged(f, kid="unknown-kid"), id="unknown-kid"),
        pytest.param(lambda f: _forged(f, algorithm="HS256", key="x" * 32), id="hmac-confusion"),
        pytest.param(lambda f: _forged(f)[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda f: "not-a-jwt", id="garbage"),
    ],
)
async def test_bad_tokens_are_unauthenticated(
    demo: Any, fake_identity: FakeIdentity, make_token: Any
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).GetCurrentUser(
            identity_pb2.GetCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {make_token(fake_identity)}"),),
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_missing_token_is_unauthenticated(demo: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).GetCurrentUser(identity_pb2.GetCurrentUserRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_domain_errors_carry_rich_status(demo: Any, fake_identity: FakeIdentity) -> None:
    _, token = fake_identity.new_user()
    auth = (("authorization", f"Bearer {token}"),)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(username="x"), metadata=auth
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error.value)
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details)
    assert bad_request.field_violations[0].field == "username"

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(email="a@b.c"), metadata=auth
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ErrorInfo()
    assert _status(error.value).details[0].Unpack(info)
    assert info.reason == "NOT_FOUND"


async def test_unexpected_errors_leak_nothing(demo: Any, fake_identity: FakeIdentity) -> None:
    _, token = fake_identity.new_user()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error"


@pytest.mark.parametrize(
    ("session_id", "code"),
    [("timeout", grpc.StatusCode.DEADLINE_EXCEEDED), ("lost", grpc.StatusCode.UNAVAILABLE)],
)
async def test_a_timeout_is_not_a_lost_database_and_the_metric_says_what_was_answered(
    demo: Any, fake_identity: FakeIdentity, session_id: str, code: grpc.StatusCode
) -> None:
    _, token = fake_identity.new_user()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _stub(demo).RevokeSession(
            identity_pb2.RevokeSessionRequest(session_id=session_id),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    assert error.value.code() == code
    text = demo[0].metrics.render()
    assert f'code="{code.name}",method="/{PUBLIC}/RevokeSession"' in text


async def test_internal_methods_need_the_service_credential(
    demo: Any, fake_identity: FakeIdentity
) -> None:
    stub = identity_pb2_grpc.IdentityInternalServiceStub(demo[1])
    request = identity_pb2.GetUserTierRequest(user_id=str(uuid.uuid4()))
    _, user_token = fake_identity.new_user()
    for metadata in [
        (),
        (("authorization", f"Bearer {user_token}"),),
        ((SERVICE_TOKEN_METADATA, ServiceTokens("w" * 40, "billing").token()),),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetUserTier(request, metadata=metadata)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await stub.GetUserTier(
        request,
        metadata=((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "billing").token()),),
    )
    assert reply.tier.code == "billing"


async def test_health_and_graceful_stop(fake_identity: FakeIdentity) -> None:
    settings = DemoSettings(internal_secret=Secret(INTERNAL_SECRET), port=0, log_json=False)
    identity = IdentityClient(
        PeerChannel(fake_identity.address, ServiceTokens(INTERNAL_SECRET, "demo"))
    )
    running = await start_server(
        settings,
        [
            Registration(
                PUBLIC, DemoPublic(), identity_pb2_grpc.add_IdentityServiceServicer_to_server
            )
        ],
        AuthPolicy(user_services=frozenset({PUBLIC})),
        jwks_verifier(settings, identity.jwks),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", PUBLIC):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await running.stop(0)


async def test_reflection_lists_the_services(demo: Any) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(demo[1])
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {service.name for service in reply.list_services_response.service}
        break
    assert {PUBLIC, INTERNAL, "grpc.health.v1.Health"} <= names


async def test_metrics_count_rpcs_per_method_and_code(
    demo: Any, fake_identity: FakeIdentity
) -> None:
    running: RunningServer = demo[0]
    await _stub(demo).ListTiers(identity_pb2.ListTiersRequest())
    text = running.metrics.render()
    assert f'code="OK",method="/{PUBLIC}/ListTiers"' in text


async def test_remembered_tokens_are_plain_values_the_collector_does_not_track(
    fake_identity: FakeIdentity,
) -> None:
    import gc

    from runtime.auth import AccessTokenVerifier

    class Keys:
        async def public_key(self, kid: str) -> Any:
            return fake_identity.key.public_key() if kid == fake_identity.kid else None

    verifier = AccessTokenVerifier(Keys(), issuer="pixelshop", audience="pixelshop")
    user_id, token = fake_identity.new_user("pro")
    first = await verifier.verify(token)
    again = await verifier.verify(token)  # from the cache
    assert first == again
    assert (again.user_id, again.tier) == (user_id, "pro")
    gc.collect()
    assert not any(gc.is_tracked(value) for value in verifier._cache.values())
    with pytest.raises(Exception, match="invalid access token"):
        await verifier.verify(_forged(fake_identity, claims={"sub": "not-a-uuid"}))


async def test_the_tier_cache_answers_until_forgotten_and_holds_untracked_values(
    fake_identity: FakeIdentity,
) -> None:
    import gc

    peer = PeerChannel(fake_identity.address, ServiceTokens(INTERNAL_SECRET, "demo"))
    client = IdentityClient(peer)
    try:
        user_id, _ = fake_identity.new_user("free")
        assert (await client.tier(user_id)).code == "free"
        fake_identity.user_tiers[str(user_id)] = "pro"  # changed behind the cache's back
        assert (await client.tier(user_id)).code == "free"
        client.forget_tier(user_id)
        assert (await client.tier(user_id)).code == "pro"
        await client.set_user_tier(user_id, "free")  # a change of its own is forgotten
        assert (await client.tier(user_id)).code == "free"
        # Ints, floats and strings only: after two full collections (inner values first)
        # the collector tracks none of it.
        gc.collect()
        gc.collect()
        assert not gc.is_tracked(client._tier_cache)
    finally:
        await peer.close()
