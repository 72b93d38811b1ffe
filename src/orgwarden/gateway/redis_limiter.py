"""Rate-limit buckets and spend counters in Redis: one store shared by every worker and instance.

``RedisLimiter`` implements ``gateway.limiter.Limiter`` with the arithmetic of ``domain.buckets``,
run inside Redis by one Lua script per call. A script runs atomically, so checking every bucket and
budget and then reserving on all of them cannot interleave with another instance's request, and
each call costs exactly one round trip. The scripts read the clock with ``TIME``: every instance
refills buckets against the same clock, whatever the skew between the gateway hosts. A refused
call writes nothing: refill is recomputed from the stored state, so storing the refilled level
would change no later decision.

Keys (all under ``prefix``):

* ``<prefix>rl:...`` (a bucket name): a string ``"<level> <at>"``, ``at`` in microseconds of Redis
  time. A string, not a hash: each script reads every bucket and counter with one ``MGET`` and
  writes a bucket with one ``SET ... EX``, where a hash took ``HMGET``, ``HSET`` and ``EXPIRE``
  (Redis' CPU per request fell by about a third; bench/RESULTS.md). A key left by an older
  orgwarden as a hash reads as absent (``MGET`` answers nil for it), i.e. full, and is overwritten.
  The bucket's spec (limit, capacity) travels with every call because an administrator may change
  it at any time. A key expires a minute after the bucket would be full again: an absent bucket is
  a full one, so forgetting an idle bucket changes nothing and nothing accumulates.
* ``<prefix>spend:...`` (a counter name, ``domain.limits``): a Redis integer in *nanodollars*.

Why nanodollars: Lua numbers are doubles, exact only up to 2**53. Picodollars would pass that at
about 9,000 USD; nanodollars stay exact up to about 9 million USD per counter (a counter is one
scope's spend in one day, week or month). Every amount added is rounded *up* to whole nanodollars
(``ceil``: reservations and overruns up, refunds towards zero), so the counter never falls below
the true spend; it may exceed it by less than one nanodollar per amount added, i.e. under two per
request (reservation plus settlement). Limits are compared as ``limit // 1000`` nanodollars, exact
for limits set in cents (multiples of 10**10 picodollars). Values given back to the caller are
multiplied by 1000 again, so callers only ever see picodollars.

A counter key that does not exist yet is started from ``baseline`` (the period's spend so far, from
the usage records): the admit script reports the missing counters without changing anything; this
process reads their baselines, writes them with ``SET NX`` (the first instance wins, so concurrent
instances cannot count the baseline twice), and runs the script again. Concurrent requests of one
process share one baseline read; two instances may each read it once, but only one value is kept.
Counter keys expire one day after the end of their period.

Any failure to talk to Redis (refused connection, timeout, an error reply) raises
``StoreUnavailable`` with a one-line reason; the gateway applies its configured failure mode. The
client reconnects by itself on the next call once Redis is back, and loads the scripts again on
every new connection (a restarted Redis has lost them). Nothing is retried: a script whose reply was
lost may have run, and running it again could reserve twice.

Calls go through ``gateway.resp.Client``: one pipelined connection per process, every call written
as it is made (those of one event-loop turn in one write) and answered in order. Each script still
runs atomically and on its own, so pipelining changes no decision; it is what keeps the cost per
request low and lets a burst of thousands of concurrent requests through without any waiting for a
connection (bench/RESULTS.md has what redis-py's pooled client cost here).

Redis Cluster is not supported: one call touches several keys that would live in different slots.
Needs Redis 6.2 or later (``SET ... EXAT``; scripts replicated by their effects, so that a script may
read ``TIME`` and then write).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from orgwarden.domain.buckets import Spec
from orgwarden.domain.limits import parse_counter, period_window
from orgwarden.gateway.limiter import Admission, Baseline, BucketWant, BudgetWant, SingleFlight, StoreUnavailable
from orgwarden.gateway.resp import Client, RedisUnavailable, ReplyError, bulk, encode

PICO_PER_NANO = 1000
_INFINITE = "-1"  # how the scripts say "can never pass" (no portable spelling of infinity in Lua)
_MAX_BUCKET_TTL = 366 * 86400  # a bucket that would take longer to refill (or never refills) is kept a year
_LOAD_ATTEMPTS = 4
_HEAD_CACHE_SIZE = 4096  # encoded script calls kept (see ``RedisLimiter._head``); starts over beyond that
_ALLOWED, _REFUSED, _MISSING = 1, 0, 2

# Shared by both scripts. The numbers come as one space-separated string (ARGV[1], split into A):
# one argument instead of dozens saves most of the client's cost of packing a call. A[1] = number
# of buckets (their keys come first in KEYS), A[2] = number of counters; then three values per
# bucket: limit per minute, capacity, amount.
_COMMON = """
local A = {}
for word in string.gmatch(ARGV[1], '%S+') do A[#A + 1] = word end
local function fmt(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(A[1])
local nc = tonumber(A[2])
local cbase = 2 + 3 * nb
local got = redis.call('MGET', unpack(KEYS))
local rates, caps, amounts, levels = {}, {}, {}, {}
for i = 1, nb do
  rates[i] = tonumber(A[3 * i]) / 60
  caps[i] = tonumber(A[3 * i + 1])
  amounts[i] = tonumber(A[3 * i + 2])
  local level = caps[i]
  if got[i] then
    local stored, at = string.match(got[i], '^(%S+) (%S+)$')
    if stored then
      local elapsed = math.max(0, (now_us - tonumber(at)) / 1000000)
      level = math.min(caps[i], tonumber(stored) + elapsed * rates[i])
    end
  end
  levels[i] = level
end
local function store(i, level)
  local ttl = MAX_TTL
  if rates[i] > 0 then ttl = math.min(MAX_TTL, math.ceil((caps[i] - level) / rates[i]) + 60) end
  redis.call('SET', KEYS[i], fmt(level) .. ' ' .. fmt(now_us), 'EX', fmt(math.max(60, ttl)))
end
""".replace("MAX_TTL", str(_MAX_BUCKET_TTL))

# Then two values per counter: limit and amount, in nanodollars. Returns
# {status, now_us, missing counter indexes} when a counter has no key yet (nothing changed), else
# {status, now_us, levels, counter values, retry_after, blocking bucket index, blocking counter index}.
_ADMIT = (
    _COMMON
    + """
local values, missing = {}, {}
for j = 1, nc do
  local v = got[nb + j]
  if v then values[j] = tonumber(v) else missing[#missing + 1] = j end
end
if #missing > 0 then return {2, now_us, missing} end
local shown = {}
for i = 1, nb do shown[i] = fmt(levels[i]) end
for j = 1, nc do
  if values[j] + tonumber(A[cbase + 2 * j]) > tonumber(A[cbase + 2 * j - 1]) then
    return {0, now_us, shown, values, '0', 0, j}
  end
end
local worst, blocking = 0, 0
for i = 1, nb do
  local wait = nil
  if amounts[i] > caps[i] then
    wait = math.huge
  elseif levels[i] < amounts[i] then
    if rates[i] > 0 then wait = (amounts[i] - levels[i]) / rates[i] else wait = math.huge end
  end
  if wait and (blocking == 0 or wait > worst) then worst, blocking = wait, i end
end
if blocking > 0 then
  if worst == math.huge then return {0, now_us, shown, values, 'INFINITE', blocking, 0} end
  return {0, now_us, shown, values, fmt(worst), blocking, 0}
end
for i = 1, nb do
  local level = levels[i] - amounts[i]
  store(i, level)
  shown[i] = fmt(level)
end
for j = 1, nc do values[j] = redis.call('INCRBY', KEYS[nb + j], A[cbase + 2 * j]) end
return {1, now_us, shown, values, '0', 0, 0}
""".replace("INFINITE", _INFINITE)
)

# Then one value per counter: the delta in nanodollars. Returns each counter's new value, or nil
# for a counter without a key (left for the baseline to count).
_SETTLE = (
    _COMMON
    + """
for i = 1, nb do store(i, math.min(caps[i], levels[i] + amounts[i])) end
local out = {}
for j = 1, nc do
  if got[nb + j] then out[j] = redis.call('INCRBY', KEYS[nb + j], A[cbase + j]) else out[j] = false end
end
return out
"""
)


def _nano(picodollars: int) -> int:
    """Rounded up (so a negative amount rounds towards zero): the counter never undercounts."""
    return -(-picodollars // PICO_PER_NANO)


def _bucket_args(buckets: Sequence[BucketWant]) -> list[str]:
    return [f"{_spec_words(b.spec)} {float(b.amount)!r}" for b in buckets]


@functools.lru_cache(maxsize=4096)
def _spec_words(spec: Spec) -> str:
    """A bucket's limit and capacity as the scripts read them (the same few specs every request)."""
    return f"{int(spec.limit)} {float(spec.capacity)!r}"


def _counter_expiry(name: str) -> int:
    """Unix time one day after the counter's period ends (a day later than needed, for clock skew)."""
    _, _, period, start = parse_counter(name)
    _, end = period_window(period, start)
    at = int((end + timedelta(days=1)).timestamp())
    return max(at, int(time.time()) + 86400)  # a past period's counter still lives long enough to be read


class RedisLimiter:
    """``Limiter`` on a shared Redis (see the module docstring for the layout and its reasons)."""

    def __init__(
        self,
        url: str,
        baseline: Baseline,
        *,
        prefix: str = "orgwarden:",
        timeout_seconds: float = 0.5,
    ) -> None:
        self._baseline = baseline
        self._prefix = prefix
        self._scripts = {"admit": _ADMIT, "settle": _SETTLE}
        # Redis names a loaded script by the SHA-1 of its text (a name, not a security measure).
        self._sha = {
            name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest() for name, text in self._scripts.items()
        }
        prepare = [("SCRIPT", "LOAD", text) for text in self._scripts.values()]
        self._redis = Client(url, timeout=timeout_seconds, prepare=prepare, name="orgwarden-limits")
        self._loading = SingleFlight()
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}

    async def _reply(self, command: bytes) -> Any:
        """One encoded command's reply; ``StoreUnavailable`` when Redis cannot be reached."""
        try:
            return await self._redis.call_encoded(command)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"Redis: {exc}") from None

    @staticmethod
    def _ok(reply: Any) -> Any:
        """An error reply is an outage too: the gateway decides what that means."""
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"Redis: ResponseError: {reply}")
        return reply

    async def _command(self, *args: str | int) -> Any:
        return self._ok(await self._reply(encode(args)))

    def _head(self, script: str, names: tuple[str, ...]) -> bytes:
        """``EVALSHA <sha> <n> <keys...>`` encoded once per script and key set (a key's requests
        name the same buckets and counters until its limits or the period change)."""
        head = self._heads.get((script, names))
        if head is None:
            if len(self._heads) >= _HEAD_CACHE_SIZE:
                self._heads.clear()
            keys = [self._prefix + name for name in names]
            head = encode(["EVALSHA", self._sha[script], len(keys), *keys], length=len(keys) + 4)
            self._heads[(script, names)] = head
        return head

    async def _call(self, script: str, names: tuple[str, ...], arg: str) -> Any:
        """Run one of the scripts (loaded again first if Redis has lost it, e.g. after SCRIPT FLUSH)."""
        command = self._head(script, names) + bulk(arg)
        reply = await self._reply(command)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self._command("SCRIPT", "LOAD", self._scripts[script])
            reply = await self._reply(command)
        return self._ok(reply)

    async def admit(self, buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]) -> Admission:
        names = (*(b.name for b in buckets), *(b.counter for b in budgets))
        args = [str(len(buckets)), str(len(budgets)), *_bucket_args(buckets)]
        for budget in budgets:
            args += [str(budget.limit // PICO_PER_NANO), str(_nano(budget.amount))]
        for _ in range(_LOAD_ATTEMPTS):
            reply: list[Any] = await self._call("admit", names, " ".join(args))
            if reply[0] != _MISSING:
                return self._admission(reply, buckets, budgets)
            await self._load([budgets[int(j) - 1].counter for j in reply[2]])
        raise StoreUnavailable("Redis: spend counters vanished while being loaded (is something deleting keys?)")

    @staticmethod
    def _admission(reply: list[Any], buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]) -> Admission:
        status, now_us, levels, values, retry, blocking_bucket, blocking_counter = reply
        return Admission(
            allowed=status == _ALLOWED,
            now=int(now_us) / 1_000_000,
            levels={b.name: float(level) for b, level in zip(buckets, levels, strict=True)},
            spent={b.counter: int(value) * PICO_PER_NANO for b, value in zip(budgets, values, strict=True)},
            retry_after=math.inf if retry == _INFINITE else float(retry),
            blocking_bucket=buckets[int(blocking_bucket) - 1].name if int(blocking_bucket) else None,
            blocking_counter=budgets[int(blocking_counter) - 1].counter if int(blocking_counter) else None,
        )

    async def _load(self, names: Sequence[str]) -> None:
        """Start missing counters from ``baseline``; concurrent requests of this process wait for
        one read instead of each querying the database."""
        await self._loading.run(names, self._start)

    async def _start(self, names: list[str]) -> None:
        loaded = await self._baseline(names)
        await asyncio.gather(*(self._set_baseline(name, int(loaded.get(name, 0))) for name in names))

    async def _set_baseline(self, name: str, picodollars: int) -> None:
        """The first instance's value wins (``NX``), so two instances cannot count a baseline twice."""
        await self._command("SET", self._prefix + name, _nano(picodollars), "NX", "EXAT", _counter_expiry(name))

    async def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int]) -> Mapping[str, int]:
        names = list(counters)
        args = [str(len(buckets)), str(len(names)), *_bucket_args(buckets)]
        args += [str(_nano(counters[name])) for name in names]
        reply: list[Any] = await self._call("settle", (*(b.name for b in buckets), *names), " ".join(args))
        return {name: int(value) * PICO_PER_NANO for name, value in zip(names, reply, strict=True) if value is not None}

    async def close(self) -> None:
        await self._redis.aclose()
