"""A per-process bound on request bytes held at once (read, parsed, or waiting on upstream)."""

from __future__ import annotations


class ByteBudget:
    """Bytes in flight. Single-threaded (the event loop), so no lock is needed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """What one request holds; grows as its body is read, released when it is answered."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    def grow_to(self, size: int) -> bool:
        """Holds `size` bytes in total; False (holding what it held) when that does not fit."""
        extra = size - self.held
        if extra <= 0:
            return True
        if self._budget.used + extra > self._budget.capacity:
            return False
        self._budget.used += extra
        self.held = size
        return True

    def release(self) -> None:
        self._budget.used -= self.held
        self.held = 0
