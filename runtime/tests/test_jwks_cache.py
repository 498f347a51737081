"""Identity's keys are cached, fetched again for an unknown kid, and survive identity outages."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from runtime.auth import JwksKeySource, ServiceTokens, b64url_encode
from runtime.clients import PeerChannel
from runtime.context import request_id_var
from runtime.errors import Unauthenticated


def _jwk(kid: str) -> dict[str, str]:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public), "kid": kid, "alg": "EdDSA"}


class Identity:
    """What identity publishes, and how often it was asked."""

    def __init__(self) -> None:
        self.keys = [_jwk("k1")]
        self.fetches = 0
        self.down = False

    async def fetch(self) -> list[dict[str, str]]:
        self.fetches += 1
        if self.down:
            raise ConnectionError("identity is down")
        return list(self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def identity() -> Identity:
    return Identity()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(identity: Identity, clock: Clock) -> JwksKeySource:
    return JwksKeySource(identity.fetch, ttl_seconds=300, min_refetch_seconds=5, clock=clock)


async def test_keys_are_cached(source: JwksKeySource, identity: Identity) -> None:
    assert await source.public_key("k1") is not None
    assert await source.public_key("k1") is not None
    assert identity.fetches == 1


async def test_an_unknown_kid_is_fetched_again_but_not_too_often(
    source: JwksKeySource, identity: Identity, clock: Clock
) -> None:
    await source.public_key("k1")
    identity.keys.append(_jwk("k2"))
    clock.now += 6  # past the refetch interval
    assert await source.public_key("k2") is not None
    assert identity.fetches == 2
    # A flood of forged kids costs identity at most one fetch per interval.
    for _ in range(50):
        assert await source.public_key("forged") is None
    assert identity.fetches == 2
    clock.now += 6
    assert await source.public_key("forged") is None
    assert identity.fetches == 3


async def test_keys_refresh_after_the_ttl(
    source: JwksKeySource, identity: Identity, clock: Clock
) -> None:
    await source.public_key("k1")
    identity.keys = [_jwk("k2")]  # k1 retired
    clock.now += 301
    assert await source.public_key("k1") is None
    assert await source.public_key("k2") is not None


async def test_cached_keys_outlive_an_identity_outage(
    source: JwksKeySource, identity: Identity, clock: Clock
) -> None:
    await source.public_key("k1")
    identity.down = True
    clock.now += 301
    assert await source.public_key("k1") is not None


async def test_no_keys_at_all_is_unauthenticated(source: JwksKeySource, identity: Identity) -> None:
    identity.down = True
    with pytest.raises(Unauthenticated):
        await source.public_key("k1")


async def test_calls_to_other_services_carry_the_request_id_and_credential() -> None:
    peer = PeerChannel("127.0.0.1:1", ServiceTokens("s" * 40, "assets"))
    token = request_id_var.set("req-42")
    try:
        metadata = dict(peer.metadata())
    finally:
        request_id_var.reset(token)
        await peer.close()
    assert metadata["x-request-id"] == "req-42"
    assert (
        ServiceTokens("s" * 40, "identity").verify(metadata["x-pixelshop-service-token"]).name
        == "assets"
    )
