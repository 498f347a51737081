"""Fakes for what assets depends on: a quota that records, stores that fail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from runtime.db import refuse_remote_call
from runtime.errors import QuotaExceeded, Unauthenticated
from runtime.peers.billing import Metric
from runtime.peers.identity import TierInfo
from services.assets.errors import StorageUnavailable
from services.assets.storage import ObjectStore

MIB = 1024 * 1024
FREE_TIER = TierInfo(code="free", max_upload_bytes=15 * MIB, max_pixels=40_000_000)


class FixedTiers:
    """Every user on the Free plan, without asking identity."""

    async def tier(self, user_id: uuid.UUID) -> TierInfo:
        refuse_remote_call("identity")
        return FREE_TIER


@dataclass
class RecordingQuota:
    """Grants (or denies) reservations and remembers every call, like billing would see.

    Like billing it is a remote call: refused inside a transaction. Reserving is
    idempotent on the key, committing and releasing on the reservation."""

    deny: bool = False
    # Refuse every call as billing does for a deleted account.
    refusing: bool = False
    failing_commits: int = 0
    reserved: dict[str, int] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    credited: list[tuple[uuid.UUID, int, str]] = field(default_factory=list)
    # Every metric asked for: the domain enum, never a protobuf number.
    metrics: list[Metric] = field(default_factory=list)

    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str:
        refuse_remote_call("billing")
        self._refuse()
        self.metrics.append(metric)
        if self.deny:
            raise QuotaExceeded("storage limit of your plan reached")
        reservation_id = f"reservation:{key}"
        self.reserved[reservation_id] = amount
        return reservation_id

    async def commit(self, reservation_id: str) -> None:
        refuse_remote_call("billing")
        self._refuse()
        if self.failing_commits:
            self.failing_commits -= 1
            raise ConnectionError("billing is unreachable")
        self.committed.append(reservation_id)

    async def release(self, reservation_id: str) -> None:
        refuse_remote_call("billing")
        self._refuse()
        self.released.append(reservation_id)

    async def credit(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> None:
        refuse_remote_call("billing")
        self._refuse()
        self.metrics.append(metric)
        if (user_id, amount, key) not in self.credited:  # idempotent on the key
            self.credited.append((user_id, amount, key))

    def _refuse(self) -> None:
        if self.refusing:
            raise Unauthenticated("this account has been deleted", reason="ACCOUNT_DELETED")

    def unsettled(self) -> set[str]:
        """Reservations neither committed nor released."""
        return set(self.reserved) - set(self.committed) - set(self.released)

    def settled_both_ways(self) -> set[str]:
        """Reservations both committed and released: never right."""
        return set(self.committed) & set(self.released)


class FailingStore:
    """Delegates to a real store, but fails in the ways a test chooses: after writing an
    object whose key ends with `fail_after_writing` (with `failure`), and on deletes."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        fail_after_writing: str = "",
        failure: BaseException | None = None,
        fail_deletes: bool = False,
    ) -> None:
        self._store = store
        self.fail_after_writing = fail_after_writing
        self.failure = failure or StorageUnavailable()
        self.fail_deletes = fail_deletes

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._store.put(key, data, content_type)
        if self.fail_after_writing and key.endswith(self.fail_after_writing):
            raise self.failure

    async def delete(self, key: str) -> None:
        if self.fail_deletes:
            raise StorageUnavailable()
        await self._store.delete(key)
