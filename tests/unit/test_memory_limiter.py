"""The in-process store: all-or-nothing admission, budgets before buckets, baselines loaded once,
settling, and pruning of what is no longer needed (with a controlled clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from orgwarden.domain.buckets import Limiter, Spec
from orgwarden.gateway.limiter import BucketWant, BudgetWant, MemoryLimiter
from tests.conftest import settled

RPM = Spec(Limiter.REQUESTS_PER_MINUTE, 60)  # a bucket of one request, one more a second
OTPM = Spec(Limiter.OUTPUT_TOKENS_PER_MINUTE, 600)  # 600 tokens, 10 a second
DAY = "spend:organization:org:daily:20261123"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def limiter(baseline: Mapping[str, int] | None = None) -> tuple[MemoryLimiter, Clock, list[Sequence[str]]]:
    calls: list[Sequence[str]] = []

    async def load(names: Sequence[str]) -> Mapping[str, int]:
        calls.append(list(names))
        await asyncio.sleep(0.01)
        return {name: (baseline or {}).get(name, 0) for name in names}

    clock = Clock()
    return MemoryLimiter(load, clock), clock, calls


def test_a_refusal_takes_nothing_from_any_bucket_or_budget() -> None:
    store, clock, _ = limiter()

    async def run() -> None:
        first = await store.admit([BucketWant("r", RPM, 1), BucketWant("o", OTPM, 500)], [BudgetWant(DAY, 100, 40)])
        assert first.allowed
        assert first.levels == {"r": 0, "o": 100}
        assert first.spent == {DAY: 40}
        second = await store.admit([BucketWant("o", OTPM, 50), BucketWant("r", RPM, 1)], [BudgetWant(DAY, 100, 40)])
        assert not second.allowed
        assert second.blocking_bucket == "r"
        assert second.retry_after == 1.0
        assert second.spent == {DAY: 40}  # the budget had room but took nothing: all or nothing
        clock.now += 1
        third = await store.admit([BucketWant("o", OTPM, 50), BucketWant("r", RPM, 1)], [BudgetWant(DAY, 100, 40)])
        assert third.allowed
        assert third.levels == {"o": 60, "r": 0}
        assert third.spent == {DAY: 80}
        fourth = await store.admit([BucketWant("r", RPM, 1)], [BudgetWant(DAY, 100, 40)])
        assert not fourth.allowed
        assert fourth.blocking_counter == DAY
        assert fourth.retry_after == 0

    asyncio.run(run())


def test_settling_returns_unused_tokens_and_replaces_a_reservation_with_the_cost() -> None:
    store, _, _ = limiter()

    async def run() -> None:
        await store.admit([BucketWant("o", OTPM, 500)], [BudgetWant(DAY, 100, 40)])
        deltas = {DAY: 7 - 40, "spend:workspace:w:daily:20261123": 7}
        values = await settled(store, [BucketWant("o", OTPM, 480)], deltas)
        assert values == {DAY: 7}  # a counter the store does not hold is left to the baseline
        after = await store.admit([BucketWant("o", OTPM, 0)], [])
        assert after.levels == {"o": 580}

    asyncio.run(run())


def test_a_baseline_is_loaded_once_however_many_requests_need_it_at_once() -> None:
    store, _, calls = limiter({DAY: 95})

    async def run() -> None:
        results = await asyncio.gather(*(store.admit([], [BudgetWant(DAY, 100, 1)]) for _ in range(10)))
        assert [r.allowed for r in results].count(True) == 5  # 95 already spent: room for five
        assert calls == [[DAY]]

    asyncio.run(run())


def test_full_buckets_and_ended_periods_are_forgotten() -> None:
    store, clock, calls = limiter({DAY: 10})

    async def run() -> None:
        await store.admit([BucketWant("r", RPM, 1)], [BudgetWant(DAY, 100, 1)])
        clock.now += 86_400  # the next day: the bucket is full again and the day is over
        await store.admit([], [])
        assert store._buckets == {}
        assert DAY not in store._counters
        await store.admit([], [BudgetWant(DAY, 100, 1)])  # asked again: loaded again
        assert calls == [[DAY], [DAY]]

    asyncio.run(run())
