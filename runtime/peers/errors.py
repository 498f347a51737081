"""A peer's failed call as the caller's domain error: the one mapping every client uses.

A client in runtime/peers/ never lets a `grpc.aio.AioRpcError` reach service code (which
knows no gRPC). It names the codes that are the peer's verdict on the request (NOT_FOUND,
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, …), each with the domain error the caller
should see, built from the peer's message; any other code (UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, a code nobody expected) means no answer could be had, and
becomes `Unavailable` (retry later), logged with the peer and the code:

    verdicts = {StatusCode.NOT_FOUND: lambda _: NotFound("thing", thing_id)}
    ...
    except grpc.aio.AioRpcError as error:
        unavailable = "things are unavailable ({code}); try again"
        raise peer_error(error, peer="things", unavailable=unavailable, verdicts=verdicts)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import grpc

from runtime.errors import DomainError, Unavailable

log = logging.getLogger("pixelshop.peers")

# Builds the caller's error from the peer's message ("" when it sent none).
Verdict = Callable[[str], DomainError]


def peer_error(
    error: grpc.aio.AioRpcError,
    *,
    peer: str,
    unavailable: str,
    verdicts: Mapping[grpc.StatusCode, Verdict] | None = None,
) -> DomainError:
    """The domain error for a peer's failed call. `verdicts` maps the codes that carry
    the peer's decision to the caller's error; every other code is `Unavailable` with
    the message `unavailable` (which may name the code as `{code}`)."""
    code = error.code()
    verdict = (verdicts or {}).get(code)
    if verdict is not None:
        return verdict(error.details() or "")
    log.warning("a call to %s failed", peer, extra={"peer": peer, "code": code.name})
    return Unavailable(unavailable.format(code=code.name))
