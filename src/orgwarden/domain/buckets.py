"""Token buckets that refill continuously, reserving several at once all-or-nothing.

Anthropic's limits are per minute but enforced continuously: a bucket holds at most ``capacity``
units and refills at ``limit / 60`` units a second. For requests the capacity is one second's worth
(at least one request), so 60 RPM allows about one request a second rather than 60 at once; token
buckets hold a whole minute's worth, so that one large request can pass when the bucket is full.

``reserve`` takes from every bucket of a request or from none (a refusal leaves no trace), and says
how long to wait until all of them could pass. ``settle`` corrects a reservation once the real
usage is known: unused tokens go back (never above capacity), overruns are taken (the bucket may go
negative, which delays the next requests, exactly as an estimate that was too low should).

The in-process store (``gateway.limiter.MemoryLimiter``) runs this arithmetic (``level_at``, with
its bucket states updated in place rather than replaced, and ``reserve`` itself for refusals); the
Redis backend runs the same arithmetic in a Lua script, atomic across instances, and is
tested against this module as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class Limiter(Enum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    INPUT_TOKENS_PER_MINUTE = "input_tokens_per_minute"
    INPUT_TOKENS_PER_MINUTE_CACHE_AWARE = "input_tokens_per_minute_cache_aware"
    OUTPUT_TOKENS_PER_MINUTE = "output_tokens_per_minute"


def capacity_of(limiter: Limiter, limit: int, request_burst_seconds: float = 1.0) -> float:
    """Requests: ``request_burst_seconds`` worth (one second by default, at least one request);
    tokens: a whole minute's worth."""
    if limiter is Limiter.REQUESTS_PER_MINUTE:
        return max(1.0, limit * request_burst_seconds / 60)
    return float(limit)


@dataclass(slots=True)
class Bucket:
    """A bucket's state: units available at time ``at`` (seconds, any monotonic-enough clock).

    Value objects made on every request (this, ``Verdict``, the limiter's wants and admissions,
    pricing's ``TokenUsage`` and ``Cost``, the rollups' ``Entry``) are plain slotted dataclasses,
    not frozen ones, and are never changed after they are made all the same: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, 2.6 times the cost, and a request
    with limits on makes about twenty of them (bench/RESULTS.md). The one exception is the state a
    store keeps: ``MemoryLimiter`` owns its buckets, hands none of them out, and updates their
    fields in place instead of making two new ones per bucket and request."""

    level: float
    at: float


@dataclass(frozen=True, slots=True)
class Spec:
    limiter: Limiter
    limit: int  # per minute
    request_burst_seconds: float = 1.0
    # Derived once: every admit and settle reads them for every bucket.
    capacity: float = field(init=False, compare=False)
    rate: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        capacity = capacity_of(self.limiter, self.limit, self.request_burst_seconds)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "rate", self.limit / 60)


def level_at(bucket: Bucket | None, spec: Spec, now: float) -> float:
    """The level of ``bucket`` refilled up to ``now``, never above capacity (a missing bucket is
    full; a clock that went back refills nothing). Written with conditional expressions rather than
    ``max``/``min`` calls, which give the same floats: this runs for every bucket of every request."""
    if bucket is None:
        return spec.capacity
    elapsed = now - bucket.at
    level = bucket.level + (elapsed if elapsed > 0.0 else 0.0) * spec.rate
    return level if level < spec.capacity else spec.capacity


def refilled(bucket: Bucket | None, spec: Spec, now: float) -> Bucket:
    return Bucket(level_at(bucket, spec, now), now)


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class Verdict:
    allowed: bool
    buckets: Mapping[str, Bucket]  # the new states (unchanged levels, refilled, when refused)
    retry_after: float  # seconds until every bucket could pass (0 when allowed)
    blocking: str | None  # the name of the bucket that refused, the one with the longest wait


def reserve(state: Mapping[str, Bucket], wants: Sequence[tuple[str, Spec, float]], now: float) -> Verdict:
    """Take ``amount`` from each named bucket, or from none of them."""
    updated = {name: refilled(state.get(name), spec, now) for name, spec, _ in wants}
    waits: dict[str, float] = {}
    for name, spec, amount in wants:
        if amount > spec.capacity:
            waits[name] = math.inf  # can never pass: larger than the bucket itself
        elif updated[name].level < amount:
            waits[name] = (amount - updated[name].level) / spec.rate if spec.rate > 0 else math.inf
    if waits:
        blocking = max(waits, key=lambda n: waits[n])
        return Verdict(False, updated, waits[blocking], blocking)
    taken = {name: Bucket(updated[name].level - amount, now) for name, _, amount in wants}
    return Verdict(True, taken, 0.0, None)


def settle(
    state: Mapping[str, Bucket], corrections: Sequence[tuple[str, Spec, float]], now: float
) -> dict[str, Bucket]:
    """Give back (positive) or take (negative) ``delta`` units after the fact."""
    out: dict[str, Bucket] = {}
    for name, spec, delta in corrections:
        current = refilled(state.get(name), spec, now)
        out[name] = Bucket(min(spec.capacity, current.level + delta), now)
    return out
