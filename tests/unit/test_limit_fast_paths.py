"""The per-request shortcuts of the limits path give exactly what the plain computation gives: the
in-process store's in-place buckets against ``domain.buckets``' reference functions, the rate-limit
headers against a direct reading of the store's levels, the token estimate, and the spend alerts'
early exit when the limits are reloaded."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from orgwarden.data import load_catalog
from orgwarden.domain.buckets import Bucket, Limiter, Spec, refilled, reserve, settle
from orgwarden.domain.limits import EMPTY_SPEND, PICODOLLARS_PER_CENT, RateLimitConfig, SpendRule
from orgwarden.domain.tokens import estimate_request
from orgwarden.gateway.alerts import SpendAlerts
from orgwarden.gateway.limiter import BucketWant, MemoryLimiter
from orgwarden.gateway.limits import Enforcer, LimitSource
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.credentials import KeyGrant
from orgwarden.storage.engine import session_factory
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import settled

SPECS = {
    "rpm": Spec(Limiter.REQUESTS_PER_MINUTE, 60),
    "rpm-burst": Spec(Limiter.REQUESTS_PER_MINUTE, 600, 2.5),
    "itpm": Spec(Limiter.INPUT_TOKENS_PER_MINUTE, 6000),
    "otpm": Spec(Limiter.OUTPUT_TOKENS_PER_MINUTE, 900),
    "none": Spec(Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE, 0),  # holds nothing, never refills
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


async def no_spend(names: Sequence[str]) -> Mapping[str, int]:
    return dict.fromkeys(names, 0)


def test_the_memory_store_updates_its_buckets_exactly_as_the_reference_functions_do() -> None:
    rng = random.Random(7)
    clock = Clock()
    store = MemoryLimiter(no_spend, clock)
    state: dict[str, Bucket] = {}  # what the reference functions make of the same calls

    async def run() -> None:
        for _ in range(3000):
            clock.now += rng.choice([0.0, 0.01, 0.3, 1.7, 20.0, -0.5])  # within a prune interval; back, too
            names = rng.sample(sorted(SPECS), rng.randint(1, 3))
            if rng.random() < 0.05:
                names.append(names[0])  # the same bucket twice in one call
            wants = [BucketWant(n, SPECS[n], float(rng.choice([0, 1, 5, 100, 700, 6001]))) for n in names]
            if rng.random() < 0.6:
                admission = await store.admit(wants, [])
                verdict = reserve(state, [(w.name, w.spec, w.amount) for w in wants], clock.now)
                state.update(verdict.buckets)
                assert admission.allowed == verdict.allowed
                assert admission.levels == {n: b.level for n, b in verdict.buckets.items()}
                assert list(admission.levels) == list(verdict.buckets)
                assert admission.retry_after == verdict.retry_after
                assert admission.blocking_bucket == verdict.blocking
            else:
                deltas = [BucketWant(w.name, w.spec, rng.choice([-300.0, -1.0, 0.5, 250.0])) for w in wants]
                await settled(store, deltas, {})
                state.update(settle(state, [(d.name, d.spec, d.amount) for d in deltas], clock.now))
            for name, spec in SPECS.items():  # (the store forgets full buckets now and then: missing is full)
                bucket = store._buckets.get(name)
                if bucket is None:
                    assert refilled(state.get(name), spec, clock.now).level == spec.capacity
                else:
                    assert (bucket.level, bucket.at) == (state[name].level, state[name].at)

    asyncio.run(run())


def grant(key: str = "key1") -> KeyGrant:
    return KeyGrant(key, "org1", "ws1", "active", None, False, "unrestricted", "global", None)


def enforcer(store: MemoryLimiter, rates: RateLimitConfig, now: datetime) -> Enforcer:
    limits = Enforcer(
        store=store,
        source=LimitSource(async_sessionmaker()),  # (never asked: the limits are set below)
        catalog=load_catalog(None),
        request_burst_seconds=1.0,
        rate_fail_open=False,
        spend_fail_open=False,
        clock=lambda: now,
    )
    limits.rates, limits.spend = rates, EMPTY_SPEND
    return limits


def expected_headers(
    levels: Mapping[str, float], buckets: Sequence[tuple[str, Spec]], now: float
) -> list[tuple[bytes, bytes]]:
    """The headers read directly off the store's levels: per kind, the bucket with the lowest level
    (the first of equal ones), its limit, its level rounded down (not below 0), and the whole second,
    rounded up, at which it is full again."""
    inputs = (Limiter.INPUT_TOKENS_PER_MINUTE, Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE)
    kinds = [
        ("requests", (Limiter.REQUESTS_PER_MINUTE,)),
        ("input-tokens", inputs),
        ("output-tokens", (Limiter.OUTPUT_TOKENS_PER_MINUTE,)),
        ("tokens", (*inputs, Limiter.OUTPUT_TOKENS_PER_MINUTE)),
    ]
    out: list[tuple[bytes, bytes]] = []
    for kind, limiters in kinds:
        # "tokens" looks at the input buckets first, then the output ones (ties go to the first).
        candidates = [(name, spec) for limiter in limiters for name, spec in buckets if spec.limiter is limiter]
        if not candidates:
            continue
        name, spec = min(candidates, key=lambda c: levels[c[0]])
        level = levels[name]
        full_in = max(0.0, spec.capacity - level) / spec.rate if spec.rate > 0 else 0.0
        reset = datetime.fromtimestamp(math.ceil(now + full_in), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out += [
            (f"anthropic-ratelimit-{kind}-limit".encode(), str(spec.limit).encode()),
            (f"anthropic-ratelimit-{kind}-remaining".encode(), str(max(0, math.floor(level))).encode()),
            (f"anthropic-ratelimit-{kind}-reset".encode(), reset.encode()),
        ]
    return out


def test_the_rate_limit_headers_show_the_most_restrictive_bucket_of_each_kind() -> None:
    group = "claude-sonnet-4"
    org = {group: {"requests_per_minute": 60, "input_tokens_per_minute": 5000, "output_tokens_per_minute": 700}}
    key = {
        group: {
            "input_tokens_per_minute_cache_aware": 5000,  # ties with the organization's input bucket
            "output_tokens_per_minute": 90_000,
            "requests_per_minute": 6,  # a bucket of one request, a tenth of a request a second
        }
    }
    rates = RateLimitConfig({"org1": org}, {}, {"key1": key})
    clock = Clock()
    store = MemoryLimiter(no_spend, clock)
    now = datetime.fromtimestamp(clock.now + 0.25, UTC)
    limits = enforcer(store, rates, now)
    request: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 650,
        "messages": [{"role": "user", "content": "x" * 400}],
    }
    body = json.dumps(request).encode()
    specs = [
        (name, Spec(limiter, value)) for name, limiter, value in rates.buckets_for("org1", "ws1", False, "key1", group)
    ]

    async def run() -> list[int]:
        statuses = []
        for _ in range(3):  # full buckets, then lower ones, then negative ones: refused
            clock.now += 0.25
            try:
                headers = (await limits.admit("messages", grant(), body, request)).headers
                statuses.append(200)
            except Refusal as refusal:
                headers = [h for h in refusal.headers if h[0] != b"retry-after"]
                statuses.append(refusal.status)
            levels = {name: refilled(store._buckets.get(name), spec, clock.now).level for name, spec in specs}
            assert headers == expected_headers(levels, specs, clock.now)
            await settled(store, [BucketWant(name, spec, -900.0) for name, spec in specs[1:]], {})
        return statuses

    assert asyncio.run(run()) == [200, 429, 429]


def test_the_token_estimate_counts_the_text_of_system_messages_and_tools() -> None:
    assert estimate_request({}) == 1
    assert estimate_request({"messages": [{"role": "user", "content": "abcd" * 10}]}) == 10 + 3 + 1
    request = {
        "system": [{"type": "text", "text": "s" * 8, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "t" * 5}, {"type": "image", "source": {"data": "zz"}}],
            },
            {"role": "assistant", "content": "a" * 3},
        ],
        "tools": [{"name": "calc", "description": "adds", "input_schema": {"type": "object", "properties": {}}}],
    }
    # 8 + 5 + 2 + 3 + len("calc") + len("adds") = 26 characters: 7 tokens; two messages of framing.
    assert estimate_request(request) == 7 + 2 * 3 + 1
    assert estimate_request({"messages": "not a list", "system": None, "tools": 5}) == -(-len("not a list") // 4) + 1


def test_a_reloaded_spend_rule_is_read_with_its_new_amount() -> None:
    cent = PICODOLLARS_PER_CENT
    engine = create_async_engine("sqlite+aiosqlite://")  # never connected: observing does no I/O
    alerts = SpendAlerts(UnitOfWorkFactory(session_factory(engine)), None, "org1")
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    alerts.observe(SpendRule("sl1", "organization", "org1", "monthly", 100, (50, 80)), 40 * cent, now)
    assert alerts.pending == 0  # 40 % of 1 dollar
    alerts.observe(SpendRule("sl1", "organization", "org1", "monthly", 60, (50, 80)), 40 * cent, now)
    assert alerts.pending == 1  # the same limit lowered to 60 cents: 66 %, past 50 %
    alerts.observe(SpendRule("sl1", "organization", "org1", "monthly", 60, ()), 60 * cent, now)
    assert alerts.pending == 1  # no thresholds: nothing to cross
    alerts.observe(SpendRule("sl1", "organization", "org1", "monthly", 60, (80, 50)), 48 * cent, now)
    assert alerts.pending == 2  # exactly 80 %, thresholds in any order
