"""Bounded per-process memory for the data plane: a memo (dict) and a set that forget their oldest
entries, and a token-bucket gate for work that must not run more often than a rate.

Anything the data plane keeps per client-chosen value (model names, header names, ...) must have a
bound, or a client can grow it without end; these are the one place that bound is written, instead
of a hand-made "dict cleared when full" in every module. Pure logic: the caller passes the time.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(dict[K, V]):
    """A dict of at most ``size`` entries, for memos keyed by what clients choose. Reads are plain
    dict reads (no cost on the hot path); ``remember`` adds an entry, forgetting the oldest when full."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` and return it."""
        if key not in self and len(self) >= self.size:
            del self[next(iter(self))]
        self[key] = value
        return value


class BoundedSet:
    """A set of at most ``size`` members; adding one more forgets the oldest (first added)."""

    __slots__ = ("_members", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._members: dict[Hashable, None] = {}  # insertion-ordered: the first key is the oldest

    def add(self, member: Hashable) -> bool:
        """Add ``member``; True if it was not there (so the caller acts once per member)."""
        members = self._members
        if member in members:
            return False
        if len(members) >= self.size:
            del members[next(iter(members))]
        members[member] = None
        return True

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)


class RateGate:
    """At most ``rate`` passes a second, ``burst`` at once (a token bucket). ``suppressed`` counts
    the refusals since the last ``take_suppressed``, ``total_suppressed`` all of them."""

    __slots__ = ("_at", "_tokens", "burst", "rate", "suppressed", "total_suppressed")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None
        self.suppressed = 0
        self.total_suppressed = 0

    def allow(self, now: float) -> bool:
        """Whether one more may pass at ``now`` (seconds, monotonic); counted as suppressed if not."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.suppressed += 1
        self.total_suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """The refusals since the last call, and start counting again."""
        count, self.suppressed = self.suppressed, 0
        return count
