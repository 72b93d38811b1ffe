"""Where rate-limit buckets and spend counters live: the seam between the gateway and its store.

A request makes two calls. ``admit`` checks every applicable bucket and spend budget and, only if
all of them have room, takes the request's reservation from each, atomically: concurrent requests
(on any worker or instance sharing the store) can never together pass a limit. ``settle`` corrects
the reservation once the real usage is known and adds the request's real cost to every spend
counter of its scopes that the store holds.

Two stores implement this: ``MemoryLimiter`` (one server process; the default) and
``gateway.redis_limiter.RedisLimiter`` (every instance; one Lua script per call). Both run the
arithmetic of ``domain.buckets``.

Spend counters are named ``spend:<scope>:<id>:<period>:<start>`` (``domain.limits``). A counter the
store does not hold yet is started from the usage records of the period so far (``baseline``), so a
restart, or a limit set in the middle of a period, counts what was already spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from orgwarden.domain.buckets import Bucket, Spec, refilled, reserve, settle
from orgwarden.domain.limits import parse_counter, period_window

PRUNE_EVERY = 600.0  # seconds

Baseline = Callable[[Sequence[str]], Awaitable[Mapping[str, int]]]
"""Period-to-date metered spend in picodollars for each named counter (from the per-day usage rollups)."""


class StoreUnavailable(Exception):
    """The shared store could not be reached; the gateway applies the configured failure mode."""


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class BucketWant:
    """Take ``amount`` from the bucket ``name`` (in ``settle``: give back ``amount``; negative takes)."""

    name: str
    spec: Spec
    amount: float


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class BudgetWant:
    """Reserve ``amount`` picodollars on ``counter`` if it stays within ``limit`` picodollars."""

    counter: str
    limit: int
    amount: int


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class Admission:
    allowed: bool
    now: float  # the store's clock, Unix seconds: what "reset" times are computed from
    levels: Mapping[str, float] = field(default_factory=dict)  # each bucket after the call
    spent: Mapping[str, int] = field(default_factory=dict)  # each budget's counter after the call
    retry_after: float = 0.0  # seconds until the refusing bucket has room (0 if a budget refused)
    blocking_bucket: str | None = None
    blocking_counter: str | None = None


class Limiter(Protocol):
    async def admit(self, buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]) -> Admission:
        """Reserve on every bucket and budget, or on none; budgets are checked first."""
        ...

    async def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int]) -> Mapping[str, int]:
        """Give back (or take) bucket units; add ``delta`` picodollars to each counter the store
        holds (others are left for ``baseline`` to read from the records later). Returns the
        counters' new values."""
        ...

    async def close(self) -> None: ...


class SingleFlight:
    """Starts each missing counter once per process however many requests need it at the same
    moment: the first caller runs ``start`` for the names nobody is starting yet, the others wait
    for that run (and see its error, if it fails)."""

    def __init__(self) -> None:
        self._starting: dict[str, asyncio.Future[None]] = {}

    async def run(self, names: Sequence[str], start: Callable[[list[str]], Awaitable[None]]) -> None:
        waits = {id(f): f for n in names if (f := self._starting.get(n)) is not None}
        fresh = [n for n in dict.fromkeys(names) if n not in self._starting]
        if fresh:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for name in fresh:
                self._starting[name] = future
            try:
                await start(fresh)
                future.set_result(None)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody else needs to
                raise
            finally:
                for name in fresh:
                    self._starting.pop(name, None)
        for wait in waits.values():
            await wait


class MemoryLimiter:
    """Buckets and counters in this process: exact for one server process, which is why several
    workers need Redis (``config.Settings``). Each call runs without an ``await`` between check and
    reservation, so concurrent requests on the event loop cannot interleave inside it."""

    def __init__(self, baseline: Baseline, clock: Callable[[], float] = time.time) -> None:
        self._baseline = baseline
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._counters: dict[str, int] = {}
        self._loading = SingleFlight()
        self._specs: dict[str, Spec] = {}
        self._next_prune = clock() + PRUNE_EVERY

    def _prune(self, now: float) -> None:
        """Forget full buckets (a missing bucket is a full one) and counters of ended periods, so
        memory follows the keys and periods in use, not every one ever seen."""
        self._next_prune = now + PRUNE_EVERY
        for name, bucket in list(self._buckets.items()):
            spec = self._specs.get(name)
            if spec is None or refilled(bucket, spec, now).level >= spec.capacity:
                self._buckets.pop(name, None)
                self._specs.pop(name, None)
        today = datetime.fromtimestamp(now, UTC)
        for name in list(self._counters):
            _, _, period, start = parse_counter(name)
            if period_window(period, start)[1] <= today:
                del self._counters[name]

    async def _ensure(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self._counters]
        if missing:
            await self._loading.run(missing, self._start)

    async def _start(self, names: list[str]) -> None:
        loaded = await self._baseline(names)
        for name in names:
            self._counters.setdefault(name, int(loaded.get(name, 0)))

    async def admit(self, buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]) -> Admission:
        await self._ensure([b.counter for b in budgets])
        now = self._clock()
        if now >= self._next_prune:
            self._prune(now)
        for want in buckets:
            self._specs[want.name] = want.spec
        for budget in budgets:
            if self._counters[budget.counter] + budget.amount > budget.limit:
                levels = {b.name: refilled(self._buckets.get(b.name), b.spec, now).level for b in buckets}
                spent = {b.counter: self._counters[b.counter] for b in budgets}
                return Admission(False, now, levels, spent, blocking_counter=budget.counter)
        verdict = reserve(self._buckets, [(b.name, b.spec, b.amount) for b in buckets], now)
        self._buckets.update(verdict.buckets)
        levels = {name: bucket.level for name, bucket in verdict.buckets.items()}
        if not verdict.allowed:
            spent = {b.counter: self._counters[b.counter] for b in budgets}
            return Admission(False, now, levels, spent, verdict.retry_after, verdict.blocking)
        for budget in budgets:
            self._counters[budget.counter] += budget.amount
        return Admission(True, now, levels, {b.counter: self._counters[b.counter] for b in budgets})

    async def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int]) -> Mapping[str, int]:
        now = self._clock()
        if buckets:
            self._buckets.update(settle(self._buckets, [(b.name, b.spec, b.amount) for b in buckets], now))
        out: dict[str, int] = {}
        for name, delta in counters.items():
            if name in self._counters:
                self._counters[name] += delta
                out[name] = self._counters[name]
        return out

    async def close(self) -> None:
        return None
