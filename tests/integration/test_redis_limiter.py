"""``RedisLimiter`` against a real Redis: the same decisions as ``MemoryLimiter`` (which runs
``domain.buckets``), all-or-nothing reservations, baselines counted once across instances, exact
budgets under concurrency, nanodollar rounding that never undercounts, and outages.

The tests use the Redis on 127.0.0.1:6379, each under a prefix of its own whose keys are deleted at
the end. Without Redis they are skipped, unless ``ORGWARDEN_TEST_REQUIRE_REDIS=1`` (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import hiredis
import pytest
import redis

from orgwarden.domain.buckets import Bucket, Limiter, Spec
from orgwarden.domain.buckets import settle as settle_buckets
from orgwarden.domain.limits import parse_counter, period_window
from orgwarden.gateway.limiter import Admission, BucketWant, BudgetWant, MemoryLimiter, StoreUnavailable
from orgwarden.gateway.redis_limiter import MAX_BATCH, SETTLE_WAIT, RedisLimiter
from orgwarden.gateway.resp import Client, RedisUnavailable
from tests.conftest import settled

REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("ORGWARDEN_TEST_REQUIRE_REDIS") == "1"
CENT = 10**10  # picodollars

T = TypeVar("T")
Told = Mapping[str, int] | StoreUnavailable  # what a settlement hands its callback


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        message = f"Redis unreachable at {REDIS_URL}: {exc}"
        if REQUIRE_REDIS:
            pytest.fail(message + " (ORGWARDEN_TEST_REQUIRE_REDIS=1)")
        pytest.skip(message)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    _require_redis()
    name = f"orgwarden-test:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def limiter(baseline: Baselines, prefix: str) -> RedisLimiter:
    """A limiter on the shared Redis with a patient timeout: these tests are about decisions and
    atomicity, and a busy test machine opening dozens of connections in one event loop can take
    longer than the 0.5 s default. Timeouts have tests of their own, on servers of their own."""
    return RedisLimiter(REDIS_URL, baseline, prefix=prefix, timeout_seconds=5)


def raw() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


def counter(scope_id: str, period: str = "daily") -> str:
    start, _ = period_window(period, datetime.now(UTC))
    return f"spend:organization:{scope_id}:{period}:{start:%Y%m%d}"


class Baselines:
    """A baseline source that counts its calls, per counter name."""

    def __init__(self, values: Mapping[str, int] | None = None, delay: float = 0.0) -> None:
        self.values = dict(values or {})
        self.delay = delay
        self.calls: Counter[str] = Counter()

    async def __call__(self, names: Sequence[str]) -> Mapping[str, int]:
        self.calls.update(names)
        if self.delay:
            await asyncio.sleep(self.delay)
        return {name: self.values.get(name, 0) for name in names}


RPM = Spec(Limiter.REQUESTS_PER_MINUTE, 120)  # capacity 2, 2 a second
ITPM = Spec(Limiter.INPUT_TOKENS_PER_MINUTE, 600)  # capacity 600, 10 a second


# -- the same decisions as the in-process reference -------------------------------------------


def test_decisions_match_the_memory_limiter_call_for_call(prefix: str) -> None:
    """Random admits and settles, with pauses for refill. The memory limiter is run at the Redis
    clock of each call (``Admission.now``, and the ``at`` a settle stored), so the two must agree
    on decisions and counter values; levels and retry-after agree to float precision (a Unix time
    as a float keeps about a quarter of a microsecond, Redis counts whole microseconds)."""
    spend = counter(uuid.uuid4().hex)
    baseline = Baselines({spend: 7 * CENT})
    rng = random.Random(1234)

    async def scenario() -> None:
        store = limiter(baseline, prefix)
        clock = [0.0]
        reference = MemoryLimiter(baseline, clock=lambda: clock[0])
        decisions: Counter[tuple[bool, str | None, str | None]] = Counter()
        try:
            for step in range(40):
                # Each call names a random selection of the buckets and budget, so that each can be the
                # one that refuses (a budget, checked first, would otherwise hide every bucket).
                tokens = float(rng.choice([100, 250, 400]))
                wants = [BucketWant("rl:rpm", RPM, 1.0)]
                wants += [BucketWant("rl:itpm", ITPM, tokens)] if rng.random() < 0.7 else []
                budgets = [BudgetWant(spend, rng.choice([8, 100]) * CENT, rng.choice([1, 2, 3]) * 10**9)]
                budgets = budgets if rng.random() < 0.7 else []
                got = await store.admit(wants, budgets)
                clock[0] = got.now
                want = await reference.admit(wants, budgets)
                assert_same(got, want, step)
                decisions[(got.allowed, got.blocking_bucket, got.blocking_counter)] += 1
                if got.allowed and len(wants) == 2 and rng.random() < 0.5:
                    used = float(rng.choice([0, tokens, tokens + 300]))
                    corrections = [BucketWant("rl:itpm", ITPM, tokens - used)]
                    deltas = {spend: rng.choice([-1, 1]) * 10**9}
                    values = await settled(store, corrections, deltas)
                    with raw() as client:
                        clock[0] = int(float(client.get(prefix + "rl:itpm").split()[1])) / 1_000_000
                    assert values == await settled(reference, corrections, deltas)
                await asyncio.sleep(rng.choice([0, 0.05, 0.25]))
        finally:
            await store.close()
        # The scenario exercised every outcome, not only the easy one.
        assert {(allowed, bucket, c is not None) for allowed, bucket, c in decisions} == {
            (True, None, False),
            (False, "rl:rpm", False),
            (False, "rl:itpm", False),
            (False, None, True),
        }

    run(scenario())
    assert baseline.calls[spend] == 2  # once per limiter: each holds its own counter


def assert_same(got: Admission, want: Admission, step: int) -> None:
    where = f"step {step}: redis {got} vs memory {want}"
    assert (got.allowed, got.blocking_bucket, got.blocking_counter) == (
        want.allowed,
        want.blocking_bucket,
        want.blocking_counter,
    ), where
    assert got.levels.keys() == want.levels.keys(), where
    for name, level in got.levels.items():
        assert level == pytest.approx(want.levels[name], abs=1e-3), where
    assert got.retry_after == pytest.approx(want.retry_after, abs=1e-3), where
    assert got.spent == want.spent, where  # amounts are whole nanodollars here: exact


def test_refill_over_time_follows_the_redis_clock(prefix: str) -> None:
    async def scenario() -> None:
        store = limiter(Baselines(), prefix)
        try:
            first = await store.admit([BucketWant("rl:rpm", RPM, 2.0)], [])
            assert first.allowed
            assert first.levels == {"rl:rpm": 0.0}
            refused = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            assert not refused.allowed
            assert refused.blocking_bucket == "rl:rpm"
            level = refused.levels["rl:rpm"]
            assert level == pytest.approx(2 * (refused.now - first.now), abs=1e-5)  # two a second
            assert refused.retry_after == pytest.approx((1 - level) / 2)  # until one request fits
            await asyncio.sleep(0.55)
            again = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            assert again.allowed
            await asyncio.sleep(1.2)
            full = await store.admit([BucketWant("rl:rpm", RPM, 0.0)], [])
            assert full.levels["rl:rpm"] == 2.0  # capped at capacity
        finally:
            await store.close()

    run(scenario())


# -- all or nothing ---------------------------------------------------------------------------


def test_a_refused_request_changes_no_bucket_and_no_counter(prefix: str) -> None:
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> None:
        store = limiter(Baselines({spend: 5 * CENT}), prefix)
        try:
            assert (await store.admit([BucketWant("rl:rpm", RPM, 1.0), BucketWant("rl:itpm", ITPM, 500.0)], [])).allowed
            with raw() as client:
                before = {k: client.get(prefix + k) for k in ("rl:rpm", "rl:itpm")}
            # The token bucket refuses: the request bucket, listed first, keeps its request.
            refused = await store.admit(
                [BucketWant("rl:rpm", RPM, 1.0), BucketWant("rl:itpm", ITPM, 500.0)],
                [BudgetWant(spend, CENT * 100, CENT)],
            )
            assert not refused.allowed
            assert refused.blocking_bucket == "rl:itpm"
            assert refused.retry_after == pytest.approx((500 - refused.levels["rl:itpm"]) / 10)
            assert refused.spent == {spend: 5 * CENT}
            # A budget refuses (checked before the buckets, which have room for this one).
            over = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [BudgetWant(spend, 5 * CENT, 1)])
            assert not over.allowed
            assert (over.blocking_counter, over.blocking_bucket, over.retry_after) == (spend, None, 0.0)
            # Larger than the bucket: never, and still nothing taken.
            never = await store.admit([BucketWant("rl:rpm", RPM, 1.0), BucketWant("rl:itpm", ITPM, 601.0)], [])
            assert not never.allowed
            assert never.blocking_bucket == "rl:itpm"
            assert math.isinf(never.retry_after)
            with raw() as client:
                assert {k: client.get(prefix + k) for k in ("rl:rpm", "rl:itpm")} == before
                assert client.get(prefix + spend) == str(5 * CENT // 1000)
        finally:
            await store.close()

    run(scenario())


def test_budgets_reserve_the_amount_and_refuse_past_the_limit(prefix: str) -> None:
    org, ws = counter(uuid.uuid4().hex), counter(uuid.uuid4().hex, "monthly")
    baseline = Baselines({org: 90 * CENT, ws: 0})

    async def scenario() -> None:
        store = limiter(baseline, prefix)
        try:
            budgets = [BudgetWant(org, 100 * CENT, 6 * CENT), BudgetWant(ws, 10 * CENT, 6 * CENT)]
            first = await store.admit([], budgets)
            assert first.allowed
            assert first.spent == {org: 96 * CENT, ws: 6 * CENT}
            second = await store.admit([], budgets)  # both would pass 100 and 10 cents: the first refuses
            assert not second.allowed
            assert second.blocking_counter == org
            assert second.spent == {org: 96 * CENT, ws: 6 * CENT}
            exact = await store.admit([], [BudgetWant(org, 100 * CENT, 4 * CENT)])  # reaching the limit passes
            assert exact.allowed
            assert exact.spent == {org: 100 * CENT}
        finally:
            await store.close()

    run(scenario())
    assert baseline.calls == Counter({org: 1, ws: 1})


# -- settle -----------------------------------------------------------------------------------


def test_settle_refunds_up_to_capacity_takes_overruns_and_counts_only_held_counters(prefix: str) -> None:
    held, unheld = counter(uuid.uuid4().hex), counter(uuid.uuid4().hex)

    async def scenario() -> None:
        store = limiter(Baselines({held: CENT}), prefix)
        try:
            reserved = await store.admit([BucketWant("rl:itpm", ITPM, 400.0)], [BudgetWant(held, 100 * CENT, 5 * CENT)])
            assert reserved.allowed
            values = await settled(store, [BucketWant("rl:itpm", ITPM, 10_000.0)], {held: -2 * CENT, unheld: 3 * CENT})
            assert values == {held: 4 * CENT}  # 1 cent before, 5 reserved, 2 given back
            level = (await store.admit([BucketWant("rl:itpm", ITPM, 0.0)], [])).levels["rl:itpm"]
            assert level == 600.0  # never above capacity
            await settled(store, [BucketWant("rl:itpm", ITPM, -900.0)], {})  # the estimate was 900 too low
            after = await store.admit([BucketWant("rl:itpm", ITPM, 1.0)], [])
            assert not after.allowed
            assert after.levels["rl:itpm"] == pytest.approx(-300, abs=1.0)
            assert after.retry_after == pytest.approx((1 - after.levels["rl:itpm"]) / 10)
            with raw() as client:
                assert not client.exists(prefix + unheld)  # left for the baseline to read later
        finally:
            await store.close()

    run(scenario())


# -- shared by instances ----------------------------------------------------------------------


def test_the_baseline_is_counted_once_however_many_instances_load_it_at_once(prefix: str) -> None:
    names = [counter(uuid.uuid4().hex, period) for period in ("daily", "weekly", "monthly")]
    first, second = Baselines(dict.fromkeys(names, 3 * CENT), delay=0.05), Baselines(dict.fromkeys(names, 3 * CENT))

    async def scenario() -> None:
        stores = [limiter(first, prefix), limiter(second, prefix)]
        try:
            budgets = [BudgetWant(name, 1000 * CENT, CENT) for name in names]
            results = await asyncio.gather(*(stores[i % 2].admit([], budgets) for i in range(100)))
            assert all(result.allowed for result in results)
        finally:
            for store in stores:
                await store.close()

    run(scenario())
    for baselines in (first, second):
        assert all(calls <= 1 for calls in baselines.calls.values())  # concurrent requests share a read
    with raw() as client:
        for name in names:
            assert int(client.get(prefix + name)) * 1000 == 3 * CENT + 100 * CENT
            # The counter lives until a day after its period ends, then disappears.
            _, _, period, start = parse_counter(name)
            _, end = period_window(period, start)
            assert client.expiretime(prefix + name) == int((end + timedelta(days=1)).timestamp())


def test_concurrent_admits_from_two_instances_never_pass_a_budget_together(prefix: str) -> None:
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> list[Admission]:
        stores = [limiter(Baselines(), prefix) for _ in range(2)]
        try:
            budgets = [BudgetWant(spend, 50 * CENT, CENT)]
            buckets = [BucketWant("rl:itpm", ITPM, 5.0)]  # room for 120: the budget binds
            return await asyncio.gather(*(stores[i % 2].admit(buckets, budgets) for i in range(200)))
        finally:
            for store in stores:
                await store.close()

    results = run(scenario())
    assert sum(result.allowed for result in results) == 50
    assert {r.blocking_counter for r in results if not r.allowed} == {spend}
    assert max(max(r.spent.values()) for r in results) == 50 * CENT


def test_a_burst_far_larger_than_the_connection_pool_is_batched_not_refused(prefix: str) -> None:
    """3000 calls at once on one instance with the default 0.5 s timeout: they go out pipelined on
    one connection, so none waits for a connection or is timed out behind the others (the last
    reply may come later than 0.5 s on a busy machine), and the budget still binds exactly."""
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> list[Admission]:
        store = RedisLimiter(REDIS_URL, Baselines(), prefix=prefix)
        try:
            budgets = [BudgetWant(spend, 1000 * CENT, CENT)]
            return await asyncio.gather(*(store.admit([], budgets) for _ in range(3000)))
        finally:
            await store.close()

    results = run(scenario())
    assert sum(result.allowed for result in results) == 1000
    assert max(max(r.spent.values()) for r in results) == 1000 * CENT


def test_one_turns_calls_are_one_script_call_settlements_first_then_admits_in_order(prefix: str) -> None:
    """Admits and settles made in the same event-loop turn go to Redis together (one ``TIME``: one
    ``now`` for all). The settlements are applied first, as one (their sum), and then each admit as
    if it had been a call of its own arriving in that order: the same decisions, levels and counter
    values as the in-process limiter given the summed settlement and then the same admits one
    after another at that moment, refusals of every kind included."""
    spend = counter(uuid.uuid4().hex)
    rng = random.Random(4321)

    async def scenario() -> None:
        baseline = Baselines({spend: 2 * CENT})
        store = limiter(baseline, prefix)
        try:
            assert (await store.admit([], [BudgetWant(spend, CENT, 0)])).spent == {spend: 2 * CENT}  # held now
            calls: list[tuple[str, list[BucketWant], list[BudgetWant], dict[str, int]]] = []
            for _ in range(60):
                if rng.random() < 0.7:
                    tokens = float(rng.choice([50, 200, 700]))
                    wants = [BucketWant("rl:rpm", RPM, 1.0), BucketWant("rl:itpm", ITPM, tokens)][: rng.choice([1, 2])]
                    budgets = [BudgetWant(spend, rng.choice([6, 9]) * CENT, rng.choice([1, 2]) * CENT)]
                    calls.append(("admit", wants, budgets if rng.random() < 0.8 else [], {}))
                else:
                    back = [BucketWant("rl:rpm", RPM, 1.0), BucketWant("rl:itpm", ITPM, rng.choice([-100.0, 150.0]))]
                    calls.append(("settle", back, [], {spend: rng.choice([-1, 1]) * CENT // 2}))

            async def one(call: tuple[str, list[BucketWant], list[BudgetWant], dict[str, int]]) -> object:
                kind, wants, budgets, deltas = call
                return await (store.admit(wants, budgets) if kind == "admit" else settled(store, wants, deltas))

            results = await asyncio.gather(*(one(call) for call in calls))
            admissions = [r for r in results if isinstance(r, Admission)]
            assert len({a.now for a in admissions}) == 1  # one script call, one TIME
            clock = [admissions[0].now]
            reference = MemoryLimiter(Baselines({spend: 2 * CENT}), clock=lambda: clock[0])
            await reference.admit([], [BudgetWant(spend, CENT, 0)])
            back: dict[str, BucketWant] = {}
            total = 0
            for kind, wants, _, deltas in calls:
                if kind == "settle":
                    for want in wants:
                        before = back.get(want.name)
                        back[want.name] = BucketWant(
                            want.name, want.spec, want.amount + (before.amount if before else 0)
                        )
                    total += deltas[spend]
            assert back  # the scenario settles something
            values = await settled(reference, list(back.values()), {spend: total})
            outcomes = set()
            for step, (call, got) in enumerate(zip(calls, results, strict=True)):
                kind, wants, budgets, deltas = call
                if kind == "admit":
                    assert isinstance(got, Admission)
                    assert_same(got, await reference.admit(wants, budgets), step)
                    outcomes.add((got.allowed, got.blocking_bucket, got.blocking_counter is not None))
                else:
                    assert got == values, f"step {step}"
            assert outcomes == {
                (True, None, False),
                (False, "rl:rpm", False),
                (False, "rl:itpm", False),
                (False, None, True),
            }
            # What Redis kept is what the reference kept, seen by one more call later.
            look = [BucketWant("rl:rpm", RPM, 0.0), BucketWant("rl:itpm", ITPM, 0.0)], [BudgetWant(spend, CENT, 0)]
            kept = await store.admit(*look)
            clock[0] = kept.now
            assert_same(kept, await reference.admit(*look), len(calls))
        finally:
            await store.close()

    run(scenario())


def test_more_calls_in_one_turn_than_one_script_call_carries_are_split_and_stay_exact(prefix: str) -> None:
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> list[Admission]:
        store = limiter(Baselines(), prefix)
        try:
            budgets = [BudgetWant(spend, 300 * CENT, CENT)]
            return await asyncio.gather(*(store.admit([], budgets) for _ in range(2 * MAX_BATCH + 5)))
        finally:
            await store.close()

    results = run(scenario())
    assert len({result.now for result in results}) == 3  # MAX_BATCH, MAX_BATCH and 5 calls
    assert sum(result.allowed for result in results) == 300
    assert all(result.allowed for result in results[:300])  # in the order they were made
    assert max(max(r.spent.values()) for r in results) == 300 * CENT


def test_a_request_cancelled_while_its_call_is_out_leaves_the_others_answered(prefix: str) -> None:
    async def scenario() -> None:
        store = limiter(Baselines(), prefix)
        try:
            tasks = [asyncio.ensure_future(store.admit([BucketWant("rl:itpm", ITPM, 100.0)], [])) for _ in range(5)]
            await asyncio.sleep(0)  # each has made its call
            tasks[2].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(done[2], asyncio.CancelledError)
            assert [a.allowed for i, a in enumerate(done) if i != 2 and isinstance(a, Admission)] == [True] * 4
            # The cancelled call was already on its way, and was applied: 600 - 6 x 100 (plus a little
            # refill at 10 a second), not the 100 left had it been dropped.
            assert (await store.admit([BucketWant("rl:itpm", ITPM, 100.0)], [])).levels["rl:itpm"] < 50
        finally:
            await store.close()

    run(scenario())


def test_concurrent_admits_never_take_more_than_a_bucket_holds(prefix: str) -> None:
    async def scenario() -> tuple[list[Admission], float]:
        stores = [limiter(Baselines(), prefix) for _ in range(2)]
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(stores[i % 2].admit([BucketWant("rl:itpm", ITPM, 10.0)], []) for i in range(200))
            )
            return results, time.monotonic() - started
        finally:
            for store in stores:
                await store.close()

    results, elapsed = run(scenario())
    # 60 fit at once; the bucket refills one such request a second while the test runs.
    assert 60 <= sum(result.allowed for result in results) <= 60 + math.ceil(elapsed)


# -- script calls: one out at a time, settlements riding along --------------------------------


def told(store: RedisLimiter, buckets: Sequence[BucketWant], counters: Mapping[str, int]) -> asyncio.Future[Told]:
    """``store.settle``, with what it hands its callback as a future (``tests.conftest.settled``
    waits at once; these tests make other calls before they wait)."""
    future: asyncio.Future[Told] = asyncio.get_running_loop().create_future()

    def tell(values: Told) -> None:
        if not future.done():  # (given up on by ``answer``: a callback that raised would wedge the store)
            future.set_result(values)

    store.settle(buckets, counters, tell)
    return future


async def answer(future: Awaitable[T]) -> T:
    """``future``'s result, or a failure after 10 s: a settlement or admit that nobody sends fails
    the test instead of hanging it."""
    async with asyncio.timeout(10):
        return await future


def stored_bucket(key: str) -> tuple[float, int]:
    """A bucket's level and ``at`` (microseconds of Redis time) as Redis holds them: the level is
    written with 17 significant digits, so it reads back as exactly the double the script had."""
    with raw() as client:
        level, at = client.get(key).split()
    return float(level), int(at)


def test_admits_made_while_a_call_is_out_wait_for_its_answer_then_leave_together_in_one_call(prefix: str) -> None:
    """At most one script call out: the first admit's call leaves at the end of its turn, and the
    admits made during the next two turns wait for its answer and then leave together in one call
    (one ``TIME``, later than the first one's), applied in the order they were made.

    Deterministic however slow the machine: the first admit is made in turn 1 and its call is
    written in turn 2 (by a callback turn 1 queued), after that turn's poll for replies. So its
    answer is read by turn 3's poll at the earliest, and handled (straight from the connection)
    after every callback queued before that poll: the admits made in turns 2 and 3, which this
    test queued in the turn before each, all find the call still out. (Admits made in turn 4 may
    find it answered and leave in a call of their own: the test makes none.)"""

    async def scenario() -> tuple[Admission, list[Admission]]:
        store = limiter(Baselines(), prefix)
        try:
            await store.admit([BucketWant("rl:itpm", ITPM, 0.0)], [])  # connected: a call is written as it leaves
            want = [BucketWant("rl:itpm", ITPM, 10.0)]
            first = asyncio.ensure_future(store.admit(want, []))
            await asyncio.sleep(0)  # turn 1: the first admit is made; its call leaves at the end of the turn
            later: list[asyncio.Future[Admission]] = []
            for _ in range(2):  # made in turns 2 and 3, four in each, while the first call is out
                later += [asyncio.ensure_future(store.admit(want, [])) for _ in range(4)]
                await asyncio.sleep(0)
            return await answer(first), await answer(asyncio.gather(*later))
        finally:
            await store.close()

    first, later = run(scenario())
    assert len({admission.now for admission in later}) == 1  # one call for all eight
    assert later[0].now > first.now  # a call of its own, after the first one was answered
    assert all(admission.allowed for admission in [first, *later])
    levels = [admission.levels["rl:itpm"] for admission in later]
    for earlier, level in itertools.pairwise(levels):
        assert level == pytest.approx(earlier - 10, abs=1e-5)  # applied in the order they were made


def test_a_settlement_rides_with_the_next_admits_call_and_is_applied_before_it(prefix: str) -> None:
    """A settle, then an admit in the same turn: one script call carries both, the settlement
    first. The admit's counter value includes the settlement, its callback has been called by
    the time the admit is answered, and the bucket only the settlement touched was written at the
    admit's ``TIME``: a settlement that made a call of its own would carry another one."""
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> tuple[Admission, Admission, float, int, Told | None]:
        store = limiter(Baselines({spend: CENT}), prefix)
        try:
            reserved = await store.admit(
                [BucketWant("rl:itpm", ITPM, 400.0)], [BudgetWant(spend, 100 * CENT, 5 * CENT)]
            )
            assert reserved.spent == {spend: 6 * CENT}
            level, at = stored_bucket(prefix + "rl:itpm")
            settlement = told(store, [BucketWant("rl:itpm", ITPM, 300.0)], {spend: -2 * CENT})
            admitted = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [BudgetWant(spend, 100 * CENT, CENT)])
            return reserved, admitted, level, at, settlement.result() if settlement.done() else None
        finally:
            await store.close()

    reserved, admitted, level_before, at_before, values = run(scenario())
    assert admitted.allowed
    assert values == {spend: 4 * CENT}  # 1 cent, 5 reserved, 2 given back: answered with the admit
    assert admitted.spent == {spend: 5 * CENT}  # and then the admit's cent
    assert level_before == ITPM.capacity - 400
    level, at = stored_bucket(prefix + "rl:itpm")
    assert at / 1_000_000 == admitted.now  # written by the admit's call
    assert at / 1_000_000 > reserved.now
    # The refund on the bucket as it had refilled by then, at the Redis clock (times counted from
    # the stored ``at``, as the script computes them: the same doubles, so the same level).
    refunded = settle_buckets({"b": Bucket(level_before, 0.0)}, [("b", ITPM, 300.0)], (at - at_before) / 1_000_000)
    assert level == refunded["b"].level


def test_a_settlement_with_no_admit_to_ride_with_leaves_by_itself_after_settle_wait(prefix: str) -> None:
    """No admit follows: the settlement still leaves, on its own timer, without ``close`` or any
    other call to push it out. It waits ``SETTLE_WAIT`` for an admit first (a lower bound only:
    how much later it is answered depends on the machine), and once its callback has its values,
    Redis has them too."""
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> tuple[Told, float, int | None, tuple[float, int]]:
        store = limiter(Baselines({spend: CENT}), prefix)
        try:
            await store.admit([BucketWant("rl:itpm", ITPM, 400.0)], [BudgetWant(spend, 100 * CENT, 5 * CENT)])
            before = stored_bucket(prefix + "rl:itpm")
            loop = asyncio.get_running_loop()
            started = loop.time()
            values = await answer(told(store, [BucketWant("rl:itpm", ITPM, -100.0)], {spend: -2 * CENT}))
            waited = loop.time() - started
            with raw() as client:
                held = client.get(prefix + spend)
            return values, waited, None if held is None else int(held), before
        finally:
            await store.close()

    values, waited, held, (level_before, at_before) = run(scenario())
    assert values == {spend: 4 * CENT}
    assert held is not None
    assert held * 1000 == 4 * CENT
    assert waited >= SETTLE_WAIT
    level, at = stored_bucket(prefix + "rl:itpm")
    overrun = settle_buckets({"b": Bucket(level_before, 0.0)}, [("b", ITPM, -100.0)], (at - at_before) / 1_000_000)
    assert level == overrun["b"].level  # (times as in the test above)


def test_a_settlement_callback_that_raises_is_logged_and_leaves_the_limiter_working(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in whatever reads a settlement's values (spend alerts) must not stop the limits: the
    call still finishes, so the admits after it are answered and ``close`` returns; the error is
    logged. (Before, the exception left the call counted as out, and every later admit waited.)"""

    def boom(values: Told) -> None:
        raise RuntimeError("a bug in an alert")

    async def scenario() -> Admission:
        store = limiter(Baselines(), prefix)
        try:
            await store.admit([BucketWant("rl:itpm", ITPM, 1.0)], [])
            store.settle([BucketWant("rl:itpm", ITPM, 1.0)], {}, boom)
            await asyncio.sleep(5 * SETTLE_WAIT)  # it leaves on its own and is answered
            return await answer(store.admit([BucketWant("rl:itpm", ITPM, 1.0)], []))
        finally:
            await answer(store.close())

    assert run(scenario()).allowed
    assert "a settlement's callback failed" in caplog.text
    assert "a bug in an alert" in caplog.text


@pytest.mark.parametrize("connected", [True, False], ids=["connected", "not-yet-connected"])
def test_close_sends_the_settlements_still_waiting_and_waits_for_their_answer(prefix: str, connected: bool) -> None:
    """A gateway shutting down right after its last requests must not drop their settlements
    (their reservations would stay held): ``close`` sends them at once instead of letting their
    timer die with the event loop, and returns once they are applied. Both ways out: on the live
    connection, and through a connection made for them."""
    spend = counter(uuid.uuid4().hex)
    with raw() as client:
        client.set(prefix + spend, 3 * CENT // 1000)  # held: a settlement counts it

    async def scenario() -> Told | None:
        store = limiter(Baselines(), prefix)
        try:
            if connected:
                await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            settlement = told(store, [BucketWant("rl:itpm", ITPM, -100.0)], {spend: 2 * CENT})
        finally:
            await store.close()
        return settlement.result() if settlement.done() else None

    assert run(scenario()) == {spend: 5 * CENT}
    with raw() as client:
        assert int(client.get(prefix + spend)) * 1000 == 5 * CENT
    assert stored_bucket(prefix + "rl:itpm")[0] == ITPM.capacity - 100  # from full: it had no key


def test_the_settlements_of_one_call_are_summed_per_bucket_and_capped_at_capacity_once(prefix: str) -> None:
    """Two settlements on one bucket in one call: a refund that alone would fill the bucket past
    its capacity, then an overrun. The call applies their sum, capped once (what the overrun first
    and the refund after gives), not the refund capped at capacity and then the overrun, which
    would leave the bucket 100 units (plus refill) lower. The counter's deltas are summed too:
    both callbacks get its value after both."""
    spend = counter(uuid.uuid4().hex)
    refund, overrun = 600.0, -300.0

    async def scenario() -> tuple[list[Told], float, int]:
        store = limiter(Baselines({spend: CENT}), prefix)
        try:
            await store.admit([BucketWant("rl:itpm", ITPM, 500.0)], [BudgetWant(spend, 100 * CENT, 5 * CENT)])
            level, at = stored_bucket(prefix + "rl:itpm")
            first = told(store, [BucketWant("rl:itpm", ITPM, refund)], {spend: -2 * CENT})
            second = told(store, [BucketWant("rl:itpm", ITPM, overrun)], {spend: 3 * CENT})
            return list(await answer(asyncio.gather(first, second))), level, at
        finally:
            await store.close()

    values, level_before, at_before = run(scenario())
    assert values == [{spend: 7 * CENT}] * 2  # 1 cent, 5 reserved, 2 given back, 3 more
    assert level_before == ITPM.capacity - 500
    assert level_before + refund > ITPM.capacity  # the refund alone would be capped
    level, at = stored_bucket(prefix + "rl:itpm")
    # ``domain.buckets`` at the Redis clock, with times counted from the stored ``at`` as the script
    # counts them: the same doubles in the same operations, so exactly the same level.
    elapsed = (at - at_before) / 1_000_000
    state = {"b": Bucket(level_before, 0.0)}
    summed = settle_buckets(state, [("b", ITPM, refund + overrun)], elapsed)["b"].level
    one_by_one = settle_buckets(settle_buckets(state, [("b", ITPM, refund)], elapsed), [("b", ITPM, overrun)], elapsed)
    assert level == summed
    assert summed < ITPM.capacity  # the cap, applied once, changed nothing
    assert level >= one_by_one["b"].level + 99  # the refund capped first would have lost 100 units


# -- rounding ---------------------------------------------------------------------------------


def test_nanodollar_rounding_never_counts_less_than_was_spent(prefix: str) -> None:
    spend = counter(uuid.uuid4().hex)
    rng = random.Random(99)
    start = 123_456_789  # picodollars: not whole nanodollars

    async def scenario() -> tuple[int, int, int]:
        store = limiter(Baselines({spend: start}), prefix)
        true_spend, requests, counted = start, 0, 0
        try:
            for _ in range(200):
                reserved = rng.randrange(1, 10**7)
                admission = await store.admit([], [BudgetWant(spend, 10**6 * CENT, reserved)])
                assert admission.allowed
                requests += 1
                cost = rng.randrange(0, 2 * reserved)
                true_spend += cost
                counted = (await settled(store, [], {spend: cost - reserved}))[spend]
                assert counted >= true_spend
        finally:
            await store.close()
        return true_spend, counted, requests

    true_spend, counted, requests = run(scenario())
    assert true_spend <= counted < true_spend + 1000 + 2000 * requests  # < 1 nanodollar per amount added


def test_limits_are_compared_in_whole_nanodollars_without_passing_them(prefix: str) -> None:
    spend = counter(uuid.uuid4().hex)

    async def scenario() -> None:
        store = limiter(Baselines(), prefix)
        try:
            assert (await store.admit([], [BudgetWant(spend, 10_500, 10_000)])).allowed  # 10 of 10 nanodollars
            refused = await store.admit([], [BudgetWant(spend, 10_500, 1)])  # rounds up to 1 nanodollar: over
            assert not refused.allowed
            assert refused.spent == {spend: 10_000}
        finally:
            await store.close()

    run(scenario())


# -- keys -------------------------------------------------------------------------------------


def test_idle_buckets_expire_once_they_would_be_full_again(prefix: str) -> None:
    async def scenario() -> None:
        store = limiter(Baselines(), prefix)
        try:
            await store.admit([BucketWant("rl:itpm", ITPM, 300.0)], [])  # 30 s to refill at 10 a second
        finally:
            await store.close()

    run(scenario())
    with raw() as client:
        assert 85 <= client.ttl(prefix + "rl:itpm") <= 90
        level, at = client.get(prefix + "rl:itpm").split()  # "<level> <at in µs>"
        assert float(level) == pytest.approx(ITPM.capacity - 300)
        assert int(at) > 0


# -- outages ----------------------------------------------------------------------------------


def test_an_unreachable_redis_raises_store_unavailable_quickly() -> None:
    async def scenario() -> None:
        store = RedisLimiter("redis://127.0.0.1:1/0", Baselines(), timeout_seconds=0.2)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            with pytest.raises(StoreUnavailable):
                await settled(store, [BucketWant("rl:rpm", RPM, 1.0)], {counter("x"): 1})
            assert time.monotonic() - started < 2
            assert "\n" not in str(refused.value)
            assert str(refused.value).startswith("Redis: ")
        finally:
            await store.close()

    run(scenario())


def test_a_redis_that_does_not_answer_times_out() -> None:
    async def scenario() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = RedisLimiter(f"redis://127.0.0.1:{port}/0", Baselines(), timeout_seconds=0.2)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Timeout"):
                await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            assert time.monotonic() - started < 2
        finally:
            await store.close()
            server.close()

    run(scenario())


async def _trickling_redis(answers: int, gap: float, unanswered: asyncio.Event | None = None) -> asyncio.Server:
    """A Redis stand-in that answers ``+OK`` to the first ``answers`` commands of each connection
    (the handshake's included), one every ``gap`` seconds, then goes silent; ``unanswered`` is set
    once a command goes unanswered."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        answered = 0
        while data := await reader.read(1 << 16):
            parser.feed(data)
            while parser.gets() is not False:
                if answered < answers:
                    await asyncio.sleep(gap)
                    writer.write(b"+OK\r\n")
                    answered += 1
                elif unanswered is not None:
                    unanswered.set()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_a_redis_that_keeps_answering_is_not_timed_out_however_long_the_queue() -> None:
    """The timeout is Redis' silence, not each command's wait: ten commands answered one every
    0.1 s all succeed under a 0.3 s timeout, though the last waits a full second."""

    async def scenario() -> list[object]:
        server = await _trickling_redis(answers=11, gap=0.1)
        client = Client(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", timeout=0.3)
        try:
            await client.call("PING")  # connected: the ten go out together
            started = time.monotonic()
            replies = await asyncio.gather(*(client.call("PING") for _ in range(9)))
            assert time.monotonic() - started >= 0.8
            return replies
        finally:
            await client.aclose()
            server.close()

    assert run(scenario()) == ["OK"] * 9


def test_a_redis_that_falls_silent_midway_times_out_what_it_still_owes() -> None:
    async def scenario() -> list[object]:
        server = await _trickling_redis(answers=4, gap=0.05)
        client = Client(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", timeout=0.3)
        try:
            started = time.monotonic()
            replies = await asyncio.gather(*(client.call("PING") for _ in range(6)), return_exceptions=True)
            assert time.monotonic() - started < 2
            return replies
        finally:
            await client.aclose()
            server.close()

    replies = run(scenario())
    assert replies[:3] == ["OK"] * 3
    assert all(isinstance(reply, RedisUnavailable) and "TimeoutError" in str(reply) for reply in replies[3:])


def asyncio_reports() -> list[dict[str, Any]]:
    """What asyncio would log on the running loop ("Task exception was never retrieved", an
    exception in a callback), collected instead, for a test to assert there is none."""
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: reports.append(context))
    return reports


def test_a_settlement_redis_refuses_hands_its_callback_store_unavailable_and_leaves_nothing_unseen() -> None:
    """A settlement is nobody's coroutine: its failure can only reach the gateway through its
    callback (which logs it), whether it left on its own timer or with an admit (which raises it
    to its caller as well). Nothing is left for asyncio to report about an exception nobody saw."""

    async def scenario() -> tuple[Told, Told, list[dict[str, Any]]]:
        reports = asyncio_reports()
        store = RedisLimiter("redis://127.0.0.1:1/0", Baselines(), timeout_seconds=0.2)
        try:
            alone = await answer(told(store, [BucketWant("rl:rpm", RPM, 1.0)], {counter("x"): CENT}))
            riding = told(store, [BucketWant("rl:rpm", RPM, 1.0)], {counter("x"): CENT})
            with pytest.raises(StoreUnavailable):
                await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            with_admit = await answer(riding)
        finally:
            await store.close()
        gc.collect()  # a task or future dropped with an exception nobody retrieved reports it now
        return alone, with_admit, reports

    alone, with_admit, reports = run(scenario())
    gc.collect()
    for values in (alone, with_admit):
        assert isinstance(values, StoreUnavailable)
        assert str(values).startswith("Redis: ConnectionError")
    assert reports == []


def test_a_settlement_sent_on_a_connection_that_falls_silent_hands_its_callback_store_unavailable() -> None:
    """The other way a call fails: written on the live connection (while another call is out),
    and timed out with it. The callback gets the timeout, and nothing is left unseen."""

    async def scenario() -> tuple[Told, list[dict[str, Any]]]:
        reports = asyncio_reports()
        unanswered = asyncio.Event()
        server = await _trickling_redis(answers=2, gap=0, unanswered=unanswered)  # CLIENT SETNAME, SCRIPT LOAD
        store = RedisLimiter(
            f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", Baselines(), timeout_seconds=0.3
        )
        try:
            admit = asyncio.ensure_future(store.admit([BucketWant("rl:rpm", RPM, 1.0)], []))
            await answer(unanswered.wait())  # connected, and the admit's call is out
            settlement = told(store, [BucketWant("rl:rpm", RPM, 1.0)], {counter("x"): CENT})
            with pytest.raises(StoreUnavailable, match="TimeoutError"):
                await answer(admit)
            values = await answer(settlement)
        finally:
            await store.close()
            server.close()
        gc.collect()
        return values, reports

    values, reports = run(scenario())
    gc.collect()
    assert isinstance(values, StoreUnavailable)
    assert str(values).startswith("Redis: TimeoutError")
    assert reports == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int, tmp: Path, password: str | None = None) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: cannot restart a Redis of this test's own"
        if REQUIRE_REDIS:
            pytest.fail(message)
        pytest.skip(message)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp),
         *(["--requirepass", password] if password else [])],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, password=password, socket_timeout=0.5).ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


def test_the_limiter_recovers_by_itself_once_redis_is_back(tmp_path: Path) -> None:
    """A Redis of the test's own is stopped and started again (empty, as without persistence): the
    limiter refuses with ``StoreUnavailable`` meanwhile, then works on the same client, and loads
    the counter's baseline again since the restarted Redis lost it (and its scripts)."""
    port = _free_port()
    spend = counter("recovery")
    baseline = Baselines({spend: 2 * CENT})
    servers = [_start_redis(port, tmp_path)]

    async def call(store: RedisLimiter) -> Admission:
        return await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [BudgetWant(spend, 100 * CENT, CENT)])

    async def scenario() -> None:
        store = RedisLimiter(f"redis://127.0.0.1:{port}/0", baseline, timeout_seconds=0.3)
        try:
            assert (await call(store)).spent == {spend: 3 * CENT}
            _stop(servers[-1])
            for _ in range(3):
                with pytest.raises(StoreUnavailable):
                    await call(store)
            servers.append(_start_redis(port, tmp_path))
            assert (await call(store)).spent == {spend: 3 * CENT}
            assert (await call(store)).spent == {spend: 4 * CENT}
        finally:
            await store.close()

    try:
        run(scenario())
    finally:
        for server in servers:
            if server.poll() is None:
                _stop(server)
    assert baseline.calls[spend] == 2


def test_scripts_that_redis_lost_are_loaded_again(tmp_path: Path) -> None:
    """SCRIPT FLUSH (or a failover to a replica without them) while connected: the next call gets
    NOSCRIPT, loads the script and runs it, and its decision is the one it would have been."""
    port = _free_port()
    server = _start_redis(port, tmp_path)
    spend = counter("flushed")

    async def scenario() -> list[Admission]:
        store = RedisLimiter(f"redis://127.0.0.1:{port}/0", Baselines(), timeout_seconds=2)
        try:
            first = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [BudgetWant(spend, 100 * CENT, CENT)])
            redis.Redis(port=port).script_flush()
            second = await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [BudgetWant(spend, 100 * CENT, CENT)])
            values = await settled(store, [], {spend: -CENT})
            assert values == {spend: CENT}
            return [first, second]
        finally:
            await store.close()

    try:
        first, second = run(scenario())
    finally:
        _stop(server)
    assert first.allowed
    assert second.allowed
    assert second.spent == {spend: 2 * CENT}
    assert second.levels["rl:rpm"] == pytest.approx(first.levels["rl:rpm"] - 1, abs=0.1)


def test_a_password_and_database_in_the_url_are_used_and_a_wrong_password_is_an_outage(tmp_path: Path) -> None:
    port = _free_port()
    server = _start_redis(port, tmp_path, password="s3cret-pw")

    async def scenario() -> str:
        store = RedisLimiter(f"redis://:s3cret-pw@127.0.0.1:{port}/3", Baselines(), timeout_seconds=2)
        wrong = RedisLimiter(f"redis://:not-it@127.0.0.1:{port}/3", Baselines(), timeout_seconds=2)
        try:
            assert (await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])).allowed
            with pytest.raises(StoreUnavailable) as refused:
                await wrong.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            return str(refused.value)
        finally:
            await store.close()
            await wrong.close()

    try:
        message = run(scenario())
        client = redis.Redis(port=port, password="s3cret-pw", db=3)
        assert client.exists("orgwarden:rl:rpm") == 1  # in database 3, as the URL said
        client.close()
    finally:
        _stop(server)
    assert message.startswith("Redis: ResponseError: AUTH: ")
    assert "not-it" not in message
    assert "\n" not in message


def test_a_unix_socket_url_is_used(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    path = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(path), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.05)

        async def scenario() -> Admission:
            store = RedisLimiter(f"unix://{path}?db=2", Baselines(), timeout_seconds=2)
            try:
                return await store.admit([BucketWant("rl:rpm", RPM, 1.0)], [])
            finally:
                await store.close()

        assert run(scenario()).allowed
        client = redis.Redis(unix_socket_path=str(path), db=2)
        assert client.exists("orgwarden:rl:rpm") == 1
        client.close()
    finally:
        _stop(process)


def test_a_bucket_left_as_a_hash_by_an_older_orgwarden_reads_as_full_and_is_replaced(prefix: str) -> None:
    with raw() as client:
        client.hset(prefix + "rl:itpm", mapping={"level": "0", "at": "0"})  # empty, in the old layout

    async def scenario() -> None:
        store = limiter(Baselines(), prefix)
        try:
            admitted = await store.admit([BucketWant("rl:itpm", ITPM, 300.0)], [])
            assert admitted.allowed
            assert admitted.levels == {"rl:itpm": pytest.approx(ITPM.capacity - 300)}
        finally:
            await store.close()

    run(scenario())
    with raw() as client:
        assert client.type(prefix + "rl:itpm") == "string"
