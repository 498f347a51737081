"""Log-in throttling per account and per client address, kept in Postgres.

Counting happens in the `login_failures` table, so every replica sees the same numbers.
Each rule is a sliding window approximated by buckets (a fifteenth of the window): the
failures of the buckets that started within the window are summed.

An attempt *reserves* a failure before the password is checked (an upsert that locks
only the bucket row, in a short transaction of its own) and the reservation is refunded
when the password turns out right. Counting first is what keeps the limit exact when
many attempts arrive at once: a parallel burst cannot slip past a check-then-count.

Over the limit, the attempt is refused with RESOURCE_EXHAUSTED and a RetryInfo naming
the wait until enough old failures have left the window. That wait never exceeds the
window, and refused attempts are not counted, so there is no permanent lock-out; a
successful log-in clears the account's failures.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import math
from dataclasses import dataclass

from runtime.errors import ResourceExhausted
from services.identity.models import ThrottleBucket, ThrottleScope
from services.identity.repository import IdentityRepository

BUCKETS_PER_WINDOW = 15
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class ThrottleRule:
    scope: ThrottleScope
    limit: int
    window: datetime.timedelta

    @property
    def bucket(self) -> datetime.timedelta:
        seconds = max(1, math.ceil(self.window.total_seconds() / BUCKETS_PER_WINDOW))
        return datetime.timedelta(seconds=seconds)

    def bucket_start(self, now: datetime.datetime) -> datetime.datetime:
        size = self.bucket
        return EPOCH + ((now - EPOCH) // size) * size

    def retry_after(
        self, buckets: list[ThrottleBucket], now: datetime.datetime
    ) -> datetime.timedelta | None:
        """None when the reserved attempt is within the limit; else how long to wait
        until, without it, fewer than `limit` failures remain in the window."""
        total = sum(bucket.failures for bucket in buckets)
        if total <= self.limit:
            return None
        must_leave = total - self.limit
        left = 0
        for bucket in buckets:  # oldest first
            left += bucket.failures
            if left >= must_leave:
                return max(bucket.start + self.window - now, datetime.timedelta(seconds=1))
        return self.window


@dataclass(frozen=True)
class Reservation:
    """Failures counted for one attempt; refunded if the password was right."""

    slots: tuple[tuple[ThrottleScope, bytes, datetime.datetime], ...]


def address_subject(address: str) -> str:
    """Whom the address rule counts: an IPv4 address, or an IPv6 client's /64 (the
    smallest block anyone is given; counting single IPv6 addresses lets a client use a
    fresh one per attempt). IPv4-mapped IPv6 addresses count as their IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def subject_hash(scope: ThrottleScope, subject: str) -> bytes:
    # Hashed so the table holds no addresses or typed log-ins (which are sometimes
    # passwords typed into the wrong field).
    return hashlib.sha256(f"{scope.value}:{subject}".encode()).digest()


class LoginThrottle:
    def __init__(self, account: ThrottleRule, ip: ThrottleRule) -> None:
        self._rules = {ThrottleScope.ACCOUNT: account, ThrottleScope.IP: ip}

    @property
    def longest_window(self) -> datetime.timedelta:
        return max(rule.window for rule in self._rules.values())

    async def reserve(
        self,
        repository: IdentityRepository,
        *,
        account: str,
        address: str,
        now: datetime.datetime,
    ) -> Reservation:
        """Counts this attempt against the account and the address; RESOURCE_EXHAUSTED
        (and the transaction rolls the count back) when either is over its limit."""
        subjects = [(ThrottleScope.ACCOUNT, account)]
        if address:
            subjects.append((ThrottleScope.IP, address_subject(address)))
        slots = []
        waits: list[datetime.timedelta] = []
        for scope, subject in subjects:
            rule = self._rules[scope]
            key = subject_hash(scope, subject)
            start = rule.bucket_start(now)
            await repository.add_login_failure(scope, key, start)
            buckets = await repository.login_failure_buckets(scope, key, now - rule.window)
            wait = rule.retry_after(buckets, now)
            if wait is not None:
                waits.append(wait)
            slots.append((scope, key, start))
        if waits:
            raise ResourceExhausted(
                "too many failed log-in attempts; try again later",
                reason="LOGIN_THROTTLED",
                retry_after=max(waits).total_seconds(),
            )
        return Reservation(tuple(slots))

    async def refund(self, repository: IdentityRepository, reservation: Reservation) -> None:
        """The password was right: the account starts afresh, the address gets its slot back."""
        for scope, key, start in reservation.slots:
            if scope is ThrottleScope.ACCOUNT:
                await repository.clear_login_failures(scope, key)
            else:
                await repository.remove_login_failure(scope, key, start)

    async def forgive_account(self, repository: IdentityRepository, account: str) -> None:
        """Forgets an account's failures (its owner just proved control of the mailbox)."""
        scope = ThrottleScope.ACCOUNT
        await repository.clear_login_failures(scope, subject_hash(scope, account))
