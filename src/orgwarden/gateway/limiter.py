"""Where rate-limit buckets and spend counters live: the seam between the gateway and its store.

A request makes two calls. ``admit`` checks every applicable bucket and spend budget and, only if
all of them have room, takes the request's reservation from each, atomically: concurrent requests
(on any worker or instance sharing the store) can never together pass a limit. ``settle`` corrects
the reservation once the real usage is known and adds the request's real cost to every spend
counter of its scopes that the store holds.

Nobody waits for a settlement: by then the request has been answered, and what it settles only
gives back what the reservation held in excess (or takes an overrun, as a late settlement would
anyway). So ``settle`` is not a coroutine: the store applies it no later than any ``admit`` this
process makes after it, and hands the counters' new values, which only spend alerts read, to a
callback. The in-process store applies it at once; the Redis store lets it ride with the next
script call, so that under load a request costs one round trip, not two.

Two stores implement this: ``MemoryLimiter`` (one server process; the default) and
``gateway.redis_limiter.RedisLimiter`` (every instance; Lua script calls that carry many requests).
Both run the arithmetic of ``domain.buckets``.

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

from orgwarden.domain.buckets import Bucket, Spec, level_at, reserve
from orgwarden.domain.limits import parse_counter, period_window

PRUNE_EVERY = 600.0  # seconds

Baseline = Callable[[Sequence[str]], Awaitable[Mapping[str, int]]]
"""Period-to-date metered spend in picodollars for each named counter (from the per-day usage rollups)."""


class StoreUnavailable(Exception):
    """The shared store could not be reached; the gateway applies the configured failure mode."""


Settled = Callable[[Mapping[str, int] | StoreUnavailable], None]
"""Told how a settlement went: the counters' new values, or why the store could not apply it. The
values may be shared with the other settlements applied with it: read them, do not change them."""


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

    def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int], then: Settled) -> None:
        """Give back (or take) bucket units; add ``delta`` picodollars to each counter the store
        holds (others are left for ``baseline`` to read from the records later). Does not wait:
        applied no later than any ``admit`` this process makes after it, and ``then`` is called
        with the new values of (at least) these counters, or the ``StoreUnavailable``, once it
        has been."""
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
    reservation, so concurrent requests on the event loop cannot interleave inside it.

    It runs ``domain.buckets``' arithmetic, with each bucket's state updated in place (the store
    owns its ``Bucket`` objects and hands none out): the levels are the same floats ``reserve`` and
    ``settle`` give, without two new objects per bucket and call."""

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
            if spec is None or level_at(bucket, spec, now) >= spec.capacity:
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
        counters = self._counters
        for budget in budgets:
            if budget.counter not in counters:  # (checked here: most calls have nothing to load)
                await self._ensure([b.counter for b in budgets])
                break
        now = self._clock()
        if now >= self._next_prune:
            self._prune(now)
        specs = self._specs
        for want in buckets:
            specs[want.name] = want.spec
        for budget in budgets:
            if counters[budget.counter] + budget.amount > budget.limit:
                levels = {b.name: level_at(self._buckets.get(b.name), b.spec, now) for b in buckets}
                spent = {b.counter: counters[b.counter] for b in budgets}
                return Admission(False, now, levels, spent, blocking_counter=budget.counter)
        # ``domain.buckets.reserve``, with the states updated in place when every bucket has room.
        # Every level is computed from the states before any is written, as ``reserve`` does.
        state = self._buckets
        taken: dict[str, float] = {}
        for want in buckets:
            spec, amount = want.spec, want.amount
            level = level_at(state.get(want.name), spec, now)
            if amount > spec.capacity or level < amount:  # refused: ``reserve`` says which bucket and how long
                verdict = reserve(state, [(b.name, b.spec, b.amount) for b in buckets], now)
                state.update(verdict.buckets)
                levels = {name: bucket.level for name, bucket in verdict.buckets.items()}
                spent = {b.counter: counters[b.counter] for b in budgets}
                return Admission(False, now, levels, spent, verdict.retry_after, verdict.blocking)
            taken[want.name] = level - amount
        self._write(taken, now)
        spent = {}
        for budget in budgets:
            spent[budget.counter] = counters[budget.counter] = counters[budget.counter] + budget.amount
        return Admission(True, now, taken, spent)

    def _write(self, levels: Mapping[str, float], now: float) -> None:
        """Each named bucket is at ``level`` as of ``now``: changed in place, or made if not held."""
        state = self._buckets
        for name, level in levels.items():
            bucket = state.get(name)
            if bucket is None:
                state[name] = Bucket(level, now)
            else:
                bucket.level = level
                bucket.at = now

    def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int], then: Settled) -> None:
        """Applied at once; ``then`` is called before this returns."""
        now = self._clock()
        if buckets:  # ``domain.buckets.settle``, with the states updated in place
            state = self._buckets
            levels: dict[str, float] = {}
            for want in buckets:
                spec = want.spec
                level = level_at(state.get(want.name), spec, now) + want.amount
                levels[want.name] = level if level < spec.capacity else spec.capacity
            self._write(levels, now)
        held = self._counters
        out: dict[str, int] = {}
        # (``filter`` tests the names in C: most of a request's counters are not held here)
        for name in filter(held.__contains__, counters):
            out[name] = held[name] = held[name] + counters[name]
        then(out)

    async def close(self) -> None:
        return None
