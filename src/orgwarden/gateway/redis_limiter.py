"""Rate-limit buckets and spend counters in Redis: one store shared by every worker and instance.

``RedisLimiter`` implements ``gateway.limiter.Limiter`` with the arithmetic of ``domain.buckets``,
run inside Redis by a Lua script. A script runs atomically, so checking every bucket and budget of a
request and then reserving on all of them cannot interleave with another instance's request, and a
request's check-and-reserve (or its settlement) costs exactly one round trip. The script reads the
clock with ``TIME``: every instance refills buckets against the same clock, whatever the skew
between the gateway hosts. A refused request writes nothing: refill is recomputed from the stored
state, so storing the refilled level would change no later decision.

**One script call for many requests.** Every ``admit`` made in the same turn of this process's
event loop (under load, the requests whose bodies arrived together) goes to Redis as one operation
of one ``EVALSHA``, at most ``MAX_BATCH`` of them. The script applies them one after another,
exactly as separate calls arriving in that order would be applied (each all-or-nothing, each seeing
the ones before it), at one ``TIME``; it reads every key once (one ``MGET``) and writes each
changed bucket and counter once at the end. What a call costs Redis is mostly the call itself and
its per-key commands, not the arithmetic (measured on the benchmark machine: about 75 µs of Redis
CPU per admit and 70 per settle as separate calls, of which an empty script is 2 to 5 µs), and what
it costs this process is mostly the system calls of a round trip and the wake-up of Redis, so the
requests of a call share that cost (bench/RESULTS.md). Two rules make calls carry more:

* **At most one call out.** An admit made while a call is out waits for its answer and then leaves
  with every admit made meanwhile. With nothing out (a quiet gateway) it leaves at the end of its
  turn, so at low load nothing waits; under load, a call carries what arrived during the last
  round trip instead of what arrived in one turn. A full batch leaves at once.
* **A settlement rides with the next admit's call, or leaves within ``SETTLE_WAIT``.** Nobody waits
  for a settlement (``gateway.limiter``: its request has been answered), so it does not make a call
  of its own unless no admit comes in time. The settlements a call carries are summed into one
  operation (units per bucket, picodollars per counter) applied *before* the call's admits: a
  bucket's refunds and overruns summed and capped at its capacity once is what applying the
  overruns first and the refunds after gives, one of the orders in which concurrent settlements
  may arrive anyway. Until then the reservation it corrects is still held, which can only refuse a
  request, never pass one: other instances see it that much later, and this process's later
  admits see it first, since they travel in the same call, after it.

Keys (all under ``prefix``):

* ``<prefix>rl:...`` (a bucket name): a string ``"<level> <at>"``, ``at`` in microseconds of Redis
  time. A string, not a hash: one ``MGET`` reads every bucket and counter of a call and one ``SET
  ... EX`` writes a bucket. A key left by an older orgwarden as a hash reads as absent (``MGET``
  answers nil for it), i.e. full, and is overwritten. The bucket's spec (limit, capacity) travels
  with every operation because an administrator may change it at any time. A key expires a minute
  after the bucket would be full again: an absent bucket is a full one, so forgetting an idle
  bucket changes nothing and nothing accumulates.
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
the usage records): the admit operation reports the missing counters without changing anything;
this process reads their baselines, writes them with ``SET NX`` (the first instance wins, so
concurrent instances cannot count the baseline twice), and asks again. Concurrent requests of one
process share one baseline read; two instances may each read it once, but only one value is kept.
Counter keys expire one day after the end of their period.

Any failure to talk to Redis (refused connection, timeout, an error reply) raises
``StoreUnavailable`` with a one-line reason in every admit of the call and hands it to every
settlement's callback; the gateway applies its configured failure mode. The client reconnects by
itself on the next call once Redis is back, and loads the script again on every new connection (a
restarted Redis has lost it). Nothing is retried: a script whose reply was lost may have run, and
running it again could reserve twice.

Calls go through ``gateway.resp.Client``: one pipelined connection per process, every call written
as it is made and answered in order (bench/RESULTS.md has what redis-py's pooled client cost here).

Redis Cluster is not supported: one call touches several keys that would live in different slots.
Needs Redis 6.2 or later (``SET ... EXAT``; scripts replicated by their effects, so that a script may
read ``TIME`` and then write).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any

from orgwarden.domain.buckets import Spec
from orgwarden.domain.limits import parse_counter, period_window
from orgwarden.gateway.limiter import (
    Admission,
    Baseline,
    BucketWant,
    BudgetWant,
    Settled,
    SingleFlight,
    StoreUnavailable,
)
from orgwarden.gateway.resp import Client, RedisUnavailable, ReplyError, bulk, encode

log = logging.getLogger("orgwarden.gateway")

PICO_PER_NANO = 1000
MAX_BATCH = 200  # operations per script call
MAX_BATCH_KEYS = 4000  # keys per script call: well below what Lua's ``unpack`` takes (8,000)
SETTLE_WAIT = 0.002  # seconds a settlement waits for an admit's call to ride with
LEVEL_SCALE = 1 << 20  # levels come back as whole multiples of 2**-20 units (integers in RESP)
_INFINITE = "-1"  # how the script says "can never pass" (no portable spelling of infinity in Lua)
_MAX_BUCKET_TTL = 366 * 86400  # a bucket that would take longer to refill (or never refills) is kept a year
_LOAD_ATTEMPTS = 4
_KEYS_CACHE_SIZE = 4096  # encoded key lists kept (see ``RedisLimiter._keys``); starts over beyond that
_ALLOWED, _REFUSED, _MISSING = 1, 0, 2
_ADMIT, _SETTLE = "1", "2"

# ARGV[1] is a JSON array of numbers (``cjson``, Redis' built-in C decoder: a quarter of the cost of
# splitting a string in Lua), the operations one after another:
#
#   admit:  1, nb, nc, then (limit per minute, capacity, amount) per bucket, (limit, amount) per counter
#   settle: 2, nb, nc, then (limit per minute, capacity, amount) per bucket, delta per counter
#
# and KEYS the keys of each operation in the same order (its nb buckets, then its nc counters; a key
# named by several operations is listed once per operation, and all of them share its state).
# Counter amounts are nanodollars. Returns {now_us, reply of each operation}:
#
#   admit:  {1 or 0, blocking bucket, blocking counter, retry_after, levels..., values...}
#           (levels times LEVEL_SCALE; indexes from 1, 0 for none), or {2, missing counters...}
#           when a counter has no key yet (nothing changed)
#   settle: the counters' new values, false for a counter without a key (left for the baseline)
_SCRIPT = (
    """
local args = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local got = redis.call('MGET', unpack(KEYS))
local level, rate_of, cap_of, value, added = {}, {}, {}, {}, {}
local changed, counted = {}, {}
local function fmt(x) return string.format('%.17g', x) end
local function refilled(i, rate, cap)
  local l = level[KEYS[i]]
  if l ~= nil then return math.min(cap, l) end
  local raw = got[i]
  if raw then
    local stored, at = string.match(raw, '^(%S+) (%S+)$')
    if stored then
      return math.min(cap, tonumber(stored) + math.max(0, (now_us - tonumber(at)) / 1000000) * rate)
    end
  end
  return cap
end
local function set_level(i, l, rate, cap)
  local k = KEYS[i]
  if level[k] == nil then changed[#changed + 1] = k end
  level[k], rate_of[k], cap_of[k] = l, rate, cap
end
local function counter(i)
  local k = KEYS[i]
  local v = value[k]
  if v == nil then
    local raw = got[i]
    if raw then v = tonumber(raw) else v = false end
    value[k] = v
  end
  return k, v
end
local function add(k, amount)
  if added[k] == nil then counted[#counted + 1] = k; added[k] = 0 end
  value[k] = value[k] + amount
  added[k] = added[k] + amount
end
local out = {now_us}
local p, key = 1, 0
while p <= #args do
  local kind, nb, nc = args[p], args[p + 1], args[p + 2]
  local b, c = p + 3, p + 3 + 3 * nb
  if kind == 1 then
    local missing, values, reply = {2}, {}, nil
    for j = 1, nc do
      local _, v = counter(key + nb + j)
      if v == false then missing[#missing + 1] = j else values[j] = v end
    end
    if #missing > 1 then
      reply = missing
    else
      local levels, rates = {}, {}
      for i = 1, nb do
        rates[i] = args[b + 3 * i - 3] / 60
        levels[i] = refilled(key + i, rates[i], args[b + 3 * i - 2])
      end
      local status, bb, bc, retry = 1, 0, 0, '0'
      for j = 1, nc do
        if values[j] + args[c + 2 * j - 1] > args[c + 2 * j - 2] then status, bc = 0, j; break end
      end
      if status == 1 then
        local worst = 0
        for i = 1, nb do
          local amount, cap, wait = args[b + 3 * i - 1], args[b + 3 * i - 2], nil
          if amount > cap then
            wait = math.huge
          elseif levels[i] < amount then
            if rates[i] > 0 then wait = (amount - levels[i]) / rates[i] else wait = math.huge end
          end
          if wait and (bb == 0 or wait > worst) then worst, bb = wait, i end
        end
        if bb > 0 then
          status = 0
          if worst == math.huge then retry = 'INFINITE' else retry = fmt(worst) end
        end
      end
      if status == 1 then
        for i = 1, nb do
          levels[i] = levels[i] - args[b + 3 * i - 1]
          set_level(key + i, levels[i], rates[i], args[b + 3 * i - 2])
        end
        for j = 1, nc do
          local k = KEYS[key + nb + j]
          add(k, args[c + 2 * j - 1])
          values[j] = value[k]
        end
      end
      reply = {status, bb, bc, retry}
      for i = 1, nb do reply[4 + i] = math.floor(levels[i] * LEVEL_SCALE) end
      for j = 1, nc do reply[4 + nb + j] = values[j] end
    end
    out[#out + 1] = reply
    p = c + 2 * nc
  else
    for i = 1, nb do
      local rate, cap = args[b + 3 * i - 3] / 60, args[b + 3 * i - 2]
      set_level(key + i, math.min(cap, refilled(key + i, rate, cap) + args[b + 3 * i - 1]), rate, cap)
    end
    local reply = {}
    for j = 1, nc do
      local k, v = counter(key + nb + j)
      if v == false then reply[j] = false else add(k, args[c + j - 1]); reply[j] = value[k] end
    end
    out[#out + 1] = reply
    p = c + nc
  end
  key = key + nb + nc
end
for _, k in ipairs(changed) do
  local l, rate, cap = level[k], rate_of[k], cap_of[k]
  local ttl = MAX_TTL
  if rate > 0 then ttl = math.min(MAX_TTL, math.ceil((cap - l) / rate) + 60) end
  redis.call('SET', k, fmt(l) .. ' ' .. fmt(now_us), 'EX', fmt(math.max(60, ttl)))
end
for _, k in ipairs(counted) do
  if added[k] ~= 0 then redis.call('INCRBY', k, string.format('%.0f', added[k])) end
end
return out
""".replace("MAX_TTL", str(_MAX_BUCKET_TTL))
    .replace("INFINITE", _INFINITE)
    .replace("LEVEL_SCALE", str(LEVEL_SCALE))
)


def _nano(picodollars: int) -> int:
    """Rounded up (so a negative amount rounds towards zero): the counter never undercounts."""
    return -(-picodollars // PICO_PER_NANO)


_spec_words: dict[int, tuple[Spec, str]] = {}


def _words_of(spec: Spec) -> str:
    """A bucket's limit and capacity as the script reads them, followed by a comma. Cached by the
    spec's identity (the enforcer's plans hand out the same few spec objects on every request), not
    by its value: hashing a frozen dataclass runs its generated ``__hash__``, Python code."""
    known = _spec_words.get(id(spec))
    if known is None or known[0] is not spec:
        if len(_spec_words) >= _KEYS_CACHE_SIZE:
            _spec_words.clear()
        known = _spec_words[id(spec)] = (spec, f"{int(spec.limit)},{float(spec.capacity)!r},")
    return known[1]


def _amount(units: float) -> str:
    whole = int(units)  # most amounts are whole (requests, tokens): ``str`` of an int is cheaper than ``repr``
    return str(whole) if whole == units else repr(float(units))


def _counter_expiry(name: str) -> int:
    """Unix time one day after the counter's period ends (a day later than needed, for clock skew)."""
    _, _, period, start = parse_counter(name)
    _, end = period_window(period, start)
    at = int((end + timedelta(days=1)).timestamp())
    return max(at, int(time.time()) + 86400)  # a past period's counter still lives long enough to be read


def _lost_script(reply: Any) -> bool:
    """Redis no longer has the script (restarted, or ``SCRIPT FLUSH``): it ran nothing."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _tell(then: Settled, values: Mapping[str, int] | StoreUnavailable) -> None:
    """A settlement's callback, which must not take the limiter down with it: an exception it
    raises would otherwise leave the call unfinished, and every later admit waiting for it."""
    try:
        then(values)
    except Exception:
        log.exception("limits: a settlement's callback failed")


class _Batch:
    """What goes to Redis in one script call: the settlements made since the last call, as one
    operation (their sum), then the admits, in the order they were made."""

    __slots__ = (
        "futures",
        "key_count",
        "keys",
        "loop",
        "refunds",
        "sent",
        "settled",
        "soon",
        "spent",
        "words",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.keys: list[bytes] = []  # each admit's keys, encoded
        self.key_count = 0
        self.words: list[str] = []  # each admit's numbers
        self.futures: list[asyncio.Future[Any]] = []  # each admit's reply
        # The settlements: per bucket its spec (the latest: a limit may have changed in between)
        # and the units given back, picodollars per counter, and who wants to know how it went.
        self.refunds: dict[str, tuple[Spec, float]] = {}
        self.spent: dict[str, int] = {}
        self.settled: list[Settled] = []
        self.soon = False  # its call leaves at the end of this turn
        self.sent = False


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
        # Redis names a loaded script by the SHA-1 of its text (a name, not a security measure).
        self._sha = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._evalsha = bulk("EVALSHA") + bulk(self._sha)  # the first two arguments of every call
        self._redis = Client(
            url, timeout=timeout_seconds, prepare=[("SCRIPT", "LOAD", _SCRIPT)], name="orgwarden-limits"
        )
        self._loading = SingleFlight()
        self._encoded_keys: dict[tuple[str, ...], bytes] = {}
        self._encoded_key: dict[str, bytes] = {}
        self._batch: _Batch | None = None
        self._calls_out = 0  # script calls sent and not yet answered
        self._drained: asyncio.Future[None] | None = None  # ``close`` waits for the calls out
        self._sending: set[asyncio.Task[None]] = set()

    # -- batching --------------------------------------------------------------------------------

    def _key(self, name: str) -> bytes:
        """One key as a RESP bulk string, encoded once."""
        encoded = self._encoded_key.get(name)
        if encoded is None:
            if len(self._encoded_key) >= _KEYS_CACHE_SIZE:
                self._encoded_key.clear()
            encoded = self._encoded_key[name] = bulk(self._prefix + name)
        return encoded

    def _keys(self, names: tuple[str, ...]) -> bytes:
        """The keys of ``names`` as RESP bulk strings, encoded once per set of names (a key's requests
        name the same buckets and counters until its limits or the period change)."""
        encoded = self._encoded_keys.get(names)
        if encoded is None:
            if len(self._encoded_keys) >= _KEYS_CACHE_SIZE:
                self._encoded_keys.clear()
            encoded = self._encoded_keys[names] = b"".join([self._key(name) for name in names])
        return encoded

    def _full(self, batch: _Batch) -> None:
        """A batch that reached ``MAX_BATCH`` admits or ``MAX_BATCH_KEYS`` keys leaves at the end of
        this turn, whatever else is out; later operations start another."""
        if len(batch.futures) >= MAX_BATCH or batch.key_count + len(batch.refunds) + len(batch.spent) >= MAX_BATCH_KEYS:
            self._batch = None
            self._soon(batch)

    def _soon(self, batch: _Batch) -> None:
        if not batch.soon:
            batch.soon = True
            batch.loop.call_soon(self._flush, batch)

    def _run(self, names: tuple[str, ...], words: str) -> asyncio.Future[Any]:
        """Add an admit to the next script call; the future gets its part of the reply. The call
        leaves at the end of this turn, or, while another is out, as soon as that one is answered."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(asyncio.get_running_loop())  # once per call: it is a getpid() in 3.11
        if not self._calls_out:
            self._soon(batch)
        future: asyncio.Future[Any] = batch.loop.create_future()
        batch.keys.append(self._keys(names))
        batch.key_count += len(names)
        batch.words.append(words)
        batch.futures.append(future)
        self._full(batch)
        return future

    def _flush(self, batch: _Batch) -> None:
        """The script call leaves: written at once on the live connection (the common case), or
        through ``_send`` when it must connect first. Once per batch (a settlement's timer may
        come after an admit has sent it)."""
        if batch.sent:
            return
        batch.sent = True
        if self._batch is batch:
            self._batch = None
        self._calls_out += 1
        keys, words, count = batch.keys, batch.words, batch.key_count
        if batch.settled:  # the settlements first, as one operation
            refunds, spent = batch.refunds, batch.spent
            count += len(refunds) + len(spent)
            keys = [*[self._key(name) for name in refunds], *[self._key(name) for name in spent], *keys]
            settle = [_SETTLE, str(len(refunds)), str(len(spent))]
            if refunds:
                settle.append(",".join([_words_of(spec) + _amount(units) for spec, units in refunds.values()]))
            settle += [str(_nano(delta)) for delta in spent.values()]
            words = [",".join(settle), *words]
        head = b"*%d\r\n%b%b" % (count + 4, self._evalsha, bulk(str(count)))
        command = b"".join([head, *keys, bulk("[" + ",".join(words) + "]")])
        if not self._redis.send_now(command, functools.partial(self._answered, batch, command)):
            self._in_task(self._send(batch, command))

    def _answered(self, batch: _Batch, command: bytes, reply: Any) -> None:
        """The call's reply, straight from the connection."""
        if _lost_script(reply):
            self._in_task(self._send(batch, command))  # e.g. after SCRIPT FLUSH: load it, then again
            return
        try:
            if isinstance(reply, RedisUnavailable):
                self._fail(batch, StoreUnavailable(f"Redis: {reply}"))
            else:
                self._deliver(batch, reply)
        finally:
            self._call_done()  # whatever happened above: the next call must be able to leave

    def _call_done(self) -> None:
        """A call is answered (or failed): the admits that waited for it leave now, together."""
        self._calls_out -= 1
        if not self._calls_out:
            batch = self._batch
            if batch is not None and batch.futures:
                self._flush(batch)
            elif self._drained is not None and not self._drained.done():
                self._drained.set_result(None)

    def _in_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._sending.add(task)  # a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch, command: bytes) -> None:
        """The slow path: connect if need be, and load the script again if Redis has lost it."""
        try:
            reply = await self._reply(command)
            if _lost_script(reply):
                self._ok(await self._reply(encode(["SCRIPT", "LOAD", _SCRIPT])))
                reply = await self._reply(command)
        except StoreUnavailable as exc:
            self._fail(batch, exc)
        else:
            self._deliver(batch, reply)
        finally:
            self._call_done()

    def _deliver(self, batch: _Batch, reply: Any) -> None:
        try:
            now_us = self._ok(reply)[0]
        except StoreUnavailable as exc:
            self._fail(batch, exc)
            return
        answers = reply[1:]
        if batch.settled:
            settlement, answers = answers[0], answers[1:]
        for future, answer in zip(batch.futures, answers, strict=True):
            if not future.done():  # a request that went away meanwhile was cancelled
                future.set_result((now_us, answer))
        if batch.settled:
            values = {
                name: int(value) * PICO_PER_NANO
                for name, value in zip(batch.spent, settlement, strict=True)
                if value is not None
            }
            for then in batch.settled:
                _tell(then, values)

    @staticmethod
    def _fail(batch: _Batch, error: StoreUnavailable) -> None:
        for future in batch.futures:
            if not future.done():
                future.set_exception(StoreUnavailable(str(error)))
                future.exception()  # seen: its request still gets it; nobody else needs to
        for then in batch.settled:
            _tell(then, StoreUnavailable(str(error)))

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

    # -- the Limiter protocol --------------------------------------------------------------------

    async def admit(self, buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]) -> Admission:
        names: list[str] = []
        words = [_ADMIT, str(len(buckets)), str(len(budgets))]
        for want in buckets:
            names.append(want.name)
            words.append(_words_of(want.spec) + _amount(want.amount))
        for budget in budgets:
            names.append(budget.counter)
            words += (str(budget.limit // PICO_PER_NANO), str(_nano(budget.amount)))
        operation = ",".join(words)
        for _ in range(_LOAD_ATTEMPTS):
            now_us, reply = await self._run(tuple(names), operation)
            if reply[0] != _MISSING:
                return self._admission(now_us, reply, buckets, budgets)
            await self._load([budgets[int(j) - 1].counter for j in reply[1:]])
        raise StoreUnavailable("Redis: spend counters vanished while being loaded (is something deleting keys?)")

    @staticmethod
    def _admission(
        now_us: int, reply: list[Any], buckets: Sequence[BucketWant], budgets: Sequence[BudgetWant]
    ) -> Admission:
        # (Loops, not comprehensions: in Python 3.11 each comprehension is a function call.)
        levels: dict[str, float] = {}
        i = 4
        for want in buckets:
            levels[want.name] = reply[i] / LEVEL_SCALE
            i += 1
        spent: dict[str, int] = {}
        for budget in budgets:
            spent[budget.counter] = reply[i] * PICO_PER_NANO
            i += 1
        if reply[0] == _ALLOWED:
            return Admission(True, now_us / 1_000_000, levels, spent)
        blocking_bucket, blocking_counter, retry = reply[1], reply[2], reply[3]
        return Admission(
            allowed=False,
            now=now_us / 1_000_000,
            levels=levels,
            spent=spent,
            retry_after=math.inf if retry == _INFINITE else float(retry),
            blocking_bucket=buckets[blocking_bucket - 1].name if blocking_bucket else None,
            blocking_counter=budgets[blocking_counter - 1].counter if blocking_counter else None,
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

    def settle(self, buckets: Sequence[BucketWant], counters: Mapping[str, int], then: Settled) -> None:
        """Added to the settlements of the next script call, which leaves with the next admit or
        within ``SETTLE_WAIT``. ``then`` gets the new values of every counter settled in that call."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(asyncio.get_running_loop())
            batch.loop.call_later(SETTLE_WAIT, self._flush, batch)
        refunds, spent = batch.refunds, batch.spent
        for want in buckets:
            before = refunds.get(want.name)
            refunds[want.name] = (want.spec, want.amount + before[1] if before else want.amount)
        for name, delta in counters.items():
            spent[name] = spent.get(name, 0) + delta
        batch.settled.append(then)
        self._full(batch)

    async def close(self) -> None:
        """Sends what waits, and lets every call out get its reply (or its time-out) before the
        connection closes."""
        if self._batch is not None:
            self._flush(self._batch)
        while self._calls_out:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        await self._redis.aclose()
