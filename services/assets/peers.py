"""What assets needs from other services, with their failures as domain errors.

The runtime's peer clients raise grpc errors; service code must not know gRPC, so this
adapter turns them into the errors a caller of assets should see.
"""

from __future__ import annotations

import uuid

import grpc

from runtime.errors import NotFound, Unavailable
from runtime.peers.identity import IdentityClient, TierInfo


class IdentityTiers:
    """A user's plan limits, from identity (cached there for a few seconds)."""

    def __init__(self, identity: IdentityClient) -> None:
        self._identity = identity

    async def user_tier(self, user_id: uuid.UUID) -> TierInfo:
        try:
            return await self._identity.user_tier(user_id)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("user", str(user_id)) from error
            raise Unavailable("cannot read the user's plan limits now; try again") from error
