"""Rate and spend limits on the data plane: what a request reserves, what it is refused with, and
what it gives back once its real usage is known.

Per request, after the key, tenant and body checks and before forwarding:

- **Rate limits.** The request's rate-limit group (its model's group; ``token_count`` for
  count_tokens; one more request of ``web_search`` when it offers the web search tool) selects the
  values in force at each level (organization, workspace override, API key). Each value is a bucket:
  one request, the estimated input tokens (``domain.tokens``), and ``max_tokens`` of output are
  reserved. After the response the estimate is replaced by the real count (cache reads leave the
  cache-aware input bucket alone) and unused output tokens go back, streams and aborted streams
  included (what was not produced is returned).
- **Spend limits.** The worst case the request can cost is reserved against every enforced limit of
  its organization, workspace and key: every byte of the body as an input token (tokens are never
  shorter than a byte; a cache write at the 1-hour price when the body asks for caching), capped at
  the model's context window, plus ``max_tokens`` of output, plus the web searches it allows. A
  request whose input the upstream fetches itself, so that it is not in the body (an image or
  document ``source`` of type ``url`` or ``file``, ``mcp_servers``, or a server tool that brings
  content in: ``web_search``, ``web_fetch``, ``code_execution``, ``mcp_toolset``), has the whole
  context window (``max_input_tokens``) as its input bound. After the response the reservation is
  replaced by the metered cost, so a limit of X is never passed: concurrent requests can fill it to
  X, not beyond. What cannot be bounded is refused while a spend limit applies: a model without a
  price (add it to the models file), a request that fetches content for a model without a context
  window in the models file, and a ``web_search`` tool without ``max_uses`` (the API has no cap of
  its own on the number of searches).

A request of a surface group the gateway forwards (Files ``files``, Skills ``skills``) reserves
one request of that group's requests-per-minute values (``admit_group``); nothing is metered.

Both go to the store in one ``admit`` call and one ``settle`` call (``gateway.limiter``). When the
shared store is unreachable, ``rate_limits_on_store_failure`` / ``spend_limits_on_store_failure``
decide: refuse with 503, or pass unchecked, logged and counted.

Limit values and spend limits are read from the database into memory and reloaded when a change is
announced in the cache-event log (``gateway.keys`` polls it), so a change is in force everywhere
within a second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orgwarden.domain.bounded import BoundedMemo
from orgwarden.domain.buckets import Limiter, Spec
from orgwarden.domain.catalog import Catalog, Model
from orgwarden.domain.limits import (
    DEFAULT_ALERT_THRESHOLDS,
    EMPTY_RATE_LIMITS,
    EMPTY_SPEND,
    RateLimitConfig,
    SpendConfig,
    SpendRule,
    counters_of,
    parse_counter,
    period_window,
    rate_groups,
)
from orgwarden.domain.pricing import TokenUsage, cost_of
from orgwarden.domain.tokens import estimate_request
from orgwarden.domain.usage import Extracted
from orgwarden.gateway.limiter import Admission, BucketWant, BudgetWant, StoreUnavailable
from orgwarden.gateway.limiter import Limiter as Store
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.credentials import KeyGrant
from orgwarden.storage.batches import MessageBatches
from orgwarden.storage.rollups import UsageRollups
from orgwarden.storage.tables import RateLimitValue, SpendLimit

log = logging.getLogger("orgwarden.gateway")

WORST_CASE_FRAMING_TOKENS = 4096  # system prompts the API adds (tools, caching), beyond the body's bytes
_PLAN_CACHE_SIZE = 4096  # per-key plans kept (see ``Enforcer._spend_plan``); the cache starts over beyond that
_UNITS = {
    Limiter.REQUESTS_PER_MINUTE: "requests per minute",
    Limiter.INPUT_TOKENS_PER_MINUTE: "input tokens per minute",
    Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE: "input tokens per minute (cache reads excluded)",
    Limiter.OUTPUT_TOKENS_PER_MINUTE: "output tokens per minute",
}
# The members as module globals for the per-request code, which tests every bucket's limiter: on
# Python 3.11 ``Limiter.X`` goes through ``EnumType``'s attribute hook, five times a global's cost.
_RPM = Limiter.REQUESTS_PER_MINUTE
_ITPM = Limiter.INPUT_TOKENS_PER_MINUTE
_ITPM_CACHE_AWARE = Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE
_OTPM = Limiter.OUTPUT_TOKENS_PER_MINUTE


class Alerts(Protocol):
    def observe(self, rule: SpendRule, spent_picodollars: int, now: datetime) -> None: ...

    def observe_refusal(self, rule: SpendRule, spent_picodollars: int, now: datetime) -> None: ...


class LimitSource:
    """Reads limit values, spend limits and period-to-date spend from the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def load(self) -> tuple[RateLimitConfig, SpendConfig]:
        async with self._sessions() as session:
            values = (await session.execute(select(RateLimitValue))).scalars().all()
            limits = (
                (await session.execute(select(SpendLimit).where(SpendLimit.amount_cents.is_not(None)))).scalars().all()
            )
        levels: dict[str, dict[str, dict[str, dict[str, int]]]] = {"organization": {}, "workspace": {}, "api_key": {}}
        for row in values:
            level = levels.setdefault(row.scope_type, {})
            level.setdefault(row.scope_id, {}).setdefault(row.group_name, {})[row.limiter] = int(row.value)
        rates = RateLimitConfig(levels["organization"], levels["workspace"], levels["api_key"])
        rules = tuple(
            SpendRule(
                id=limit.id,
                scope_type=limit.scope_type,
                scope_id=limit.scope_id,
                period=limit.period,
                amount_cents=int(limit.amount_cents or 0),
                thresholds=tuple(limit.alert_thresholds or DEFAULT_ALERT_THRESHOLDS),
            )
            for limit in limits
        )
        return rates, SpendConfig(rules)

    async def baseline(self, counters: Sequence[str]) -> dict[str, int]:
        """Metered spend so far in each counter's period, in picodollars, plus what message batches
        not settled yet hold reserved on it (``gateway.batches``): a store that starts a counter
        again (a restart of the in-process store, a Redis that lost its keys) keeps their reservations."""
        out: dict[str, int] = {}
        async with self._sessions() as session:
            rollups = UsageRollups(session)  # day rows: a period is whole UTC days
            for name in counters:
                scope_type, scope_id, period, start = parse_counter(name)
                _, end = period_window(period, start)
                out[name] = (await rollups.spent(scope_type, [scope_id], start, end)).get(scope_id, 0)
            for reserved_on, amount in await MessageBatches(session).reservations():
                for name in reserved_on:
                    if name in out:
                        out[name] += amount
        return out


@dataclass(slots=True)
class _PlannedBucket:
    """A bucket a key's requests reserve on, with what is made once for it rather than per request."""

    name: str
    limiter: Limiter
    value: int
    spec: Spec
    group: str
    # The want of the last request, reused by the next one that reserves the same amount: always
    # for a requests bucket (one request), mostly for output tokens (clients keep their max_tokens).
    # Wants are never changed, so tickets can share one.
    want: BucketWant | None = None


_Limit = tuple[bytes, bytes]  # a ``-limit`` header
# A header kind in force: the position of its first bucket and that bucket's ``-limit`` header, the
# other buckets of the kind the same way (in the order ties are broken), and the kind's
# ``-remaining`` and ``-reset`` names.
_HeaderKind = tuple[int, _Limit, tuple[tuple[int, _Limit], ...], bytes, bytes]


@dataclass(frozen=True, slots=True)
class _RatePlan:
    """The buckets a key's requests of one kind (endpoint, group, web search offered or not) reserve
    on, and their header plan, computed once per key and kind while the rate limits stay the same."""

    buckets: tuple[_PlannedBucket, ...]
    tokens: bool  # a bucket counts tokens: the request's estimate is needed
    levels: tuple[tuple[str, float, float], ...]  # each bucket's name, capacity and rate, for ``_headers``
    headers: tuple[_HeaderKind, ...]


_NO_RATES = _RatePlan((), False, (), ())


@dataclass(frozen=True, slots=True)
class _SpendPlan:
    """What a key's requests reserve on one UTC day: its rules, every counter its cost goes into, and
    one budget (the lowest amount) per counter that a rule reads."""

    rules: tuple[SpendRule, ...]
    alerts: tuple[tuple[SpendRule, str], ...]  # each rule with the counter it reads
    counters: tuple[str, ...]
    budgets: tuple[tuple[str, int], ...]  # (counter, limit in picodollars), in the order of the rules
    reserved: tuple[str, ...]  # those of ``counters`` that a budget reserves on, in the same order
    since: datetime  # the UTC day the plan holds for: [since, until)
    until: datetime


_NEVER = datetime.min.replace(tzinfo=UTC)
_NO_SPEND = _SpendPlan((), (), (), (), (), _NEVER, _NEVER)


@dataclass(slots=True)
class Ticket:
    """What a request reserved, so that ``settle`` can correct exactly that."""

    wants: list[BucketWant]  # one per bucket in force
    budgets: list[BudgetWant]
    spend: _SpendPlan  # the rules and counters of the request's key on its day (empty without a body)
    worst: int  # picodollars reserved on each of ``budgets``
    at: datetime
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    checked: bool = True


# Tuples, not sets: ``in`` on a tuple of enum members compares by identity; a set would hash them
# (``Enum.__hash__`` is Python code).
_INPUT = (Limiter.INPUT_TOKENS_PER_MINUTE, Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE)
_OUTPUT = (Limiter.OUTPUT_TOKENS_PER_MINUTE,)
# Per kind: its three header names, and the limiters it covers, in the order ties are broken.
_HEADER_KINDS: tuple[tuple[bytes, bytes, bytes, tuple[tuple[Limiter, ...], ...]], ...] = tuple(
    (
        f"anthropic-ratelimit-{kind}-limit".encode(),
        f"anthropic-ratelimit-{kind}-remaining".encode(),
        f"anthropic-ratelimit-{kind}-reset".encode(),
        members,
    )
    for kind, members in (
        ("requests", ((Limiter.REQUESTS_PER_MINUTE,),)),
        ("input-tokens", (_INPUT,)),
        ("output-tokens", (_OUTPUT,)),
        ("tokens", (_INPUT, _OUTPUT)),
    )
)


@functools.lru_cache(maxsize=1024)
def _reset_value(unix_seconds: int) -> bytes:
    """RFC 3339 of a whole second (most responses of a second share one)."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


@functools.lru_cache(maxsize=4096)
def _number(value: int) -> bytes:
    """A ``-remaining`` value: the same few come back (a bucket far from its limit refills to full
    between requests and shows capacity less one request's amount; a requests bucket counts few)."""
    return str(value).encode()


def _header_plan(buckets: Sequence[_PlannedBucket]) -> tuple[_HeaderKind, ...]:
    """The header kinds in force for these buckets (see ``_HeaderKind``)."""
    plan = []
    for limit_name, remaining_name, reset_name, members in _HEADER_KINDS:
        candidates = [
            (i, (limit_name, str(b.spec.limit).encode()))
            for limiters in members
            for i, b in enumerate(buckets)
            if b.limiter in limiters
        ]
        if candidates:
            (first, limit), *others = candidates
            plan.append((first, limit, tuple(others), remaining_name, reset_name))
    return tuple(plan)


def _headers(admission: Admission, plan: _RatePlan) -> list[tuple[bytes, bytes]]:
    """``anthropic-ratelimit-*`` for the most restrictive bucket of each kind in force (the first of
    equally restrictive ones): ``-remaining`` is the level rounded down (at least 0), ``-reset`` the
    whole second, rounded up, when the bucket will be full again at its rate."""
    if not plan.buckets:
        return []
    levels = admission.levels
    now = admission.now
    this_second = math.ceil(now)
    this_reset = _reset_value(this_second)
    found: list[float] = []  # per bucket: its level, -remaining and -reset
    remaining: list[bytes] = []
    reset: list[bytes] = []
    for name, capacity, rate in plan.levels:
        level = levels.get(name, capacity)
        found.append(level)
        remaining.append(_number(int(level)) if level > 0 else b"0")  # int(): the floor of a level > 0
        if level < capacity and rate > 0:
            full_at = now + (capacity - level) / rate
            # full_at >= now > this_second - 1: no later than this_second, it rounds up to this_second.
            reset.append(this_reset if full_at <= this_second else _reset_value(math.ceil(full_at)))
        else:
            reset.append(this_reset)
    headers: list[tuple[bytes, bytes]] = []
    for i, limit, others, remaining_name, reset_name in plan.headers:
        for j, other_limit in others:  # (most kinds have one bucket)
            if found[j] < found[i]:
                i, limit = j, other_limit
        headers += (limit, (remaining_name, remaining[i]), (reset_name, reset[i]))
    return headers


def _level_of(name: str) -> str:
    kind, ident = name.split(":")[1:3]
    return {"org": "organization", "ws": f"workspace {ident}", "key": f"API key {ident}"}.get(kind, kind)


class Enforcer:
    def __init__(
        self,
        *,
        store: Store,
        source: LimitSource,
        catalog: Catalog,
        request_burst_seconds: float,
        rate_fail_open: bool,
        spend_fail_open: bool,
        alerts: Alerts | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self._source = source
        self._catalog = catalog
        self._burst = request_burst_seconds
        self._rate_fail_open = rate_fail_open
        self._spend_fail_open = spend_fail_open
        self._alerts = alerts
        self._clock = clock
        self._groups = {name: group for group in rate_groups(catalog) for name in (group.models or ())}
        self._display = {group.name: group.display_name for group in rate_groups(catalog)}
        self.rates: RateLimitConfig = EMPTY_RATE_LIMITS
        self.spend: SpendConfig = EMPTY_SPEND
        self._stale = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.unchecked = 0  # requests passed without a check because the store was unreachable
        self.refused = {"rate": 0, "spend": 0}  # requests refused by a limit, by kind (for metrics)
        self._last_outage_log = 0.0
        # Per-key plans, valid as long as ``self.spend`` / ``self.rates`` are the objects they were
        # computed from (a reload replaces them) and, for spend, for the UTC day they hold for.
        self._spend_plans: dict[tuple[str, str, str, str | None], _SpendPlan] = {}
        self._spend_plans_of: SpendConfig | None = None
        self._rate_plans: dict[tuple[str, str, str, str | None, bool, bool], _RatePlan] = {}
        self._rate_plans_of: RateLimitConfig | None = None
        # Picodollars per input token, 1-hour cache-write token, output token and web search, by
        # (model id, inference geo): the worst case is their sum of products, as ``cost_of`` adds it.
        self._unit_prices: BoundedMemo[tuple[str, str | None], tuple[int, int, int, int]] = BoundedMemo(
            _PLAN_CACHE_SIZE  # only client-chosen geos of every kind fill it
        )
        self._batch_unit_prices: BoundedMemo[tuple[str, str | None], tuple[int, int, int, int]] = BoundedMemo(
            _PLAN_CACHE_SIZE  # the same at batch prices (``admit_batch``)
        )

    # -- configuration -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.rates, self.spend = await self._source.load()
        self._task = asyncio.create_task(self._run(), name="orgwarden-limits")

    async def stop(self) -> None:
        self._stopping.set()
        self._stale.set()
        if self._task is not None:
            await self._task
        await self.store.close()

    def changed(self, entity_type: str) -> None:
        """Called by the key cache's poller for every change event: reload on limit changes."""
        if entity_type in ("rate_limits", "spend_limits"):
            self._stale.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._stale.wait()
            if self._stopping.is_set():
                return
            self._stale.clear()
            try:
                self.rates, self.spend = await self._source.load()
            except Exception as exc:  # keep the limits in force; try again shortly
                log.error("limits: cannot reload limits (%s); keeping the ones in force", exc)
                await asyncio.sleep(0.5)
                self._stale.set()

    # -- per request -----------------------------------------------------------------------------

    async def admit(self, endpoint: str, grant: KeyGrant, body: bytes, request: Mapping[str, Any] | None) -> Ticket:
        """Reserve what the request may use; raise ``Refusal`` (429, 400 or 503) if it may not pass."""
        now = self._clock()
        model: str | None = None  # (no body)
        searches = _NO_TOOLS
        if request is not None:
            model, searches = str(request.get("model")), _web_search_tools(request)
        rates = self._rate_plan(endpoint, grant, model, bool(searches))
        wants = self._bucket_wants(rates, request) if rates.buckets else []
        budgets: list[BudgetWant] = []
        spend, worst = _NO_SPEND, 0
        if request:
            spend = self._spend_plan(grant, now)
            if spend.budgets:
                worst = self._worst_case(request, body, searches)
                for counter, limit in spend.budgets:  # (a loop: a comprehension is a function call in 3.11)
                    budgets.append(BudgetWant(counter, limit, worst))
        ticket = Ticket(wants, budgets, spend, worst, now)
        if not wants and not budgets:
            return ticket
        try:
            admission = await self.store.admit(wants, budgets)
        except StoreUnavailable as exc:
            return self._outage(ticket, exc)
        ticket.headers = _headers(admission, rates)
        if admission.allowed:
            return ticket
        if admission.blocking_counter is not None:
            self._at_the_wall(admission.blocking_counter, admission.spent, spend.rules, now)
            raise self._spend_refusal(admission.blocking_counter, spend.rules, now, ticket.headers)
        raise self._rate_refusal(admission, wants, ticket.headers)

    def _at_the_wall(self, counter: str, spent: Mapping[str, int], rules: Sequence[SpendRule], now: datetime) -> None:
        """A request refused on ``counter``: its lowest limit is reached (``SpendAlerts.observe_refusal``).
        Not for a batch, whose worst case (every request's) can be refused far from the limit."""
        alerts, value = self._alerts, spent.get(counter)
        if alerts is None or value is None:
            return
        binding = [rule for rule in rules if rule.counter(now) == counter]
        lowest = min(rule.amount_picodollars for rule in binding)
        for rule in binding:
            if rule.amount_picodollars == lowest:
                alerts.observe_refusal(rule, value, now)

    async def admit_group(self, group: str, grant: KeyGrant) -> Ticket:
        """One request of a surface group (``files``, ``skills``, ``batch``): its requests-per-minute
        values only (the gateway meters no tokens of these), and no spend. A separate method, so
        that Messages' ``admit`` pays nothing for it; the same refusals (429 with the limit's
        headers, 503 on a store outage when set to fail closed)."""
        rates = self._rates_of(grant, group, False, False)
        ticket = Ticket(self._bucket_wants(rates, None) if rates.buckets else [], [], _NO_SPEND, 0, self._clock())
        if not ticket.wants:
            return ticket
        try:
            admission = await self.store.admit(ticket.wants, [])
        except StoreUnavailable as exc:
            return self._outage(ticket, exc)
        ticket.headers = _headers(admission, rates)
        if admission.allowed:
            return ticket
        raise self._rate_refusal(admission, ticket.wants, ticket.headers)

    def _rate_plan(self, endpoint: str, grant: KeyGrant, model: str | None, searches: bool) -> _RatePlan:
        """The buckets of the request's groups (its model's group, or ``token_count``; ``web_search``
        too when it offers the web search tool), computed once per key and kind of request while the
        rate limits stay the same. ``model`` is ``None`` without a request body."""
        if endpoint == "count_tokens":
            group: str | None = "token_count"
            messages = searches = False
        elif endpoint == "batch":  # every Message Batches call: one request of the batch group
            group = "batch"
            messages = searches = False
        elif endpoint == "messages" and model is not None:
            model_group = self._groups.get(model)
            group = model_group.name if model_group is not None else None
            messages = True
        else:
            return _NO_RATES
        return self._rates_of(grant, group, searches, messages)

    def _rates_of(self, grant: KeyGrant, group: str | None, searches: bool, messages: bool) -> _RatePlan:
        rates = self.rates
        if rates is not self._rate_plans_of or len(self._rate_plans) >= _PLAN_CACHE_SIZE:
            self._rate_plans.clear()
            self._rate_plans_of = rates
        key = (grant.organization_id, grant.workspace_id, grant.key_id, group, searches, messages)
        plan = self._rate_plans.get(key)
        if plan is None:
            groups = ([] if group is None else [group]) + (["web_search"] if searches else [])
            plan = self._rate_plans[key] = self._make_rate_plan(grant, groups, messages)
        return plan

    def _make_rate_plan(self, grant: KeyGrant, groups: Sequence[str], messages: bool) -> _RatePlan:
        buckets: list[_PlannedBucket] = []
        for group in groups:
            for name, limiter, value in self.rates.buckets_for(
                grant.organization_id, grant.workspace_id, False, grant.key_id, group
            ):
                if limiter is Limiter.REQUESTS_PER_MINUTE or (group != "web_search" and messages):
                    buckets.append(_PlannedBucket(name, limiter, value, Spec(limiter, value, self._burst), group))
                # else: token limits of surface groups count nothing the gateway proxies
        tokens = any(bucket.limiter is not Limiter.REQUESTS_PER_MINUTE for bucket in buckets)
        levels = tuple((b.name, b.spec.capacity, b.spec.rate) for b in buckets)
        return _RatePlan(tuple(buckets), tokens, levels, _header_plan(buckets))

    def _bucket_wants(self, plan: _RatePlan, request: Mapping[str, Any] | None) -> list[BucketWant]:
        """One want per bucket of ``plan``: one request, the estimated input tokens, or ``max_tokens``
        of output; a 400 if one can never fit in its bucket."""
        estimate = max_tokens = 0
        if plan.tokens and request is not None:  # (token buckets are only planned for messages)
            estimate = estimate_request(request)
            raw = request.get("max_tokens")
            max_tokens = raw if isinstance(raw, int) and raw > 0 else 0
        wants: list[BucketWant] = []
        for bucket in plan.buckets:
            want = bucket.want
            if bucket.limiter is _RPM:
                amount = 1.0  # capacity_of: a requests bucket holds at least one request, so it always fits
            elif bucket.limiter is _OTPM:
                amount = float(max_tokens)
            else:
                amount = float(estimate)
            if want is None or want.amount != amount:
                if amount > bucket.spec.capacity:
                    raise self._too_large(bucket, amount)
                want = bucket.want = BucketWant(bucket.name, bucket.spec, amount)
            wants.append(want)
        return wants

    def _too_large(self, bucket: _PlannedBucket, amount: float) -> Refusal:
        limiter, group = bucket.limiter, bucket.group
        return Refusal(
            400,
            "invalid_request_error",
            f"this request needs {int(amount)} of your {_level_of(bucket.name)} limit of {bucket.value}"
            f" {_UNITS[limiter]} for {self._display.get(group, group)}: it can never fit"
            + (" (lower max_tokens)" if limiter is Limiter.OUTPUT_TOKENS_PER_MINUTE else ""),
        )

    def _spend_plan(self, grant: KeyGrant, now: datetime) -> _SpendPlan:
        """The key's spend rules, counters and budgets on ``now``'s UTC day (every period of a counter
        starts on a UTC day), computed once per key and day while the spend limits stay the same."""
        spend = self.spend
        if spend is not self._spend_plans_of or len(self._spend_plans) >= _PLAN_CACHE_SIZE:
            self._spend_plans.clear()
            self._spend_plans_of = spend
        org, workspace, key_id, user_id = grant.organization_id, grant.workspace_id, grant.key_id, grant.user_id
        key = (org, workspace, key_id, user_id)
        plan = self._spend_plans.get(key)
        if plan is None or not plan.since <= now < plan.until:
            rules = tuple(spend.rules_for(org, workspace, key_id, user_id))
            rule_counters = tuple(rule.counter(now) for rule in rules)
            limits: dict[str, int] = {}
            for rule, counter in zip(rules, rule_counters, strict=True):
                amount = rule.amount_picodollars
                limits[counter] = min(limits.get(counter, amount), amount)
            counters = tuple(counters_of(org, workspace, key_id, now, user_id))
            since = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            reserved = tuple(counter for counter in counters if counter in limits)
            alerts = tuple(zip(rules, rule_counters, strict=True))
            budgets = tuple(limits.items())
            plan = _SpendPlan(rules, alerts, counters, budgets, reserved, since, since + timedelta(days=1))
            self._spend_plans[key] = plan
        return plan

    def _worst_case(
        self, request: Mapping[str, Any], body: bytes, searches: Sequence[Mapping[str, Any]], batch: bool = False
    ) -> int:
        model_name = str(request.get("model"))
        model = self._catalog.find(model_name)
        if model is None:
            raise Refusal(
                400,
                "invalid_request_error",
                f"model {model_name!r} has no price in orgwarden's models file, so a spend limit cannot"
                " bound it: add the model and its prices to the models file (ORGWARDEN_MODELS_FILE)",
            )
        tokens = len(body) + WORST_CASE_FRAMING_TOKENS
        if searches or _fetches_content(request, body):
            if not model.max_input_tokens:
                raise Refusal(
                    400,
                    "invalid_request_error",
                    f"model {model_name!r} has no context window (max_input_tokens) in orgwarden's models file,"
                    " so a spend limit cannot bound a request whose input the upstream fetches (URL or file"
                    " sources, MCP servers, server tools): add it to the models file (ORGWARDEN_MODELS_FILE)",
                )
            tokens = int(model.max_input_tokens)  # fetched content is not in the body: all of the context
        elif model.max_input_tokens:
            tokens = min(tokens, int(model.max_input_tokens))
        raw = request.get("max_tokens")
        output = raw if isinstance(raw, int) and raw > 0 else int(model.max_tokens or 0)
        geo = request.get("inference_geo")
        geo = geo if isinstance(geo, str) else None
        memo = self._batch_unit_prices if batch else self._unit_prices
        input_, write_1h, output_, search = memo.get((model.id, geo)) or self._prices(model, geo, batch)
        # (``find``, not ``in``: ``bytes.__contains__`` first tries its argument as an int, and raises)
        caching = body.find(b"cache_control") != -1
        worst = (write_1h if caching else input_) * tokens + output_ * output
        return worst + search * _web_search_uses(searches) if searches else worst

    def _prices(self, model: Model, geo: str | None, batch: bool = False) -> tuple[int, int, int, int]:
        """Picodollars per input token, 1-hour cache-write token, output token and web search: what
        ``cost_of`` multiplies each count by (it is linear), asked once per model, geo and batch."""
        catalog = self._catalog
        prices = (
            cost_of(catalog, model, TokenUsage(input_tokens=1), batch=batch, inference_geo=geo).total,
            cost_of(catalog, model, TokenUsage(cache_creation_1h=1), batch=batch, inference_geo=geo).total,
            cost_of(catalog, model, TokenUsage(output_tokens=1), batch=batch, inference_geo=geo).total,
            cost_of(catalog, model, TokenUsage(web_search_requests=1), batch=batch, inference_geo=geo).total,
        )
        memo = self._batch_unit_prices if batch else self._unit_prices
        return memo.remember((model.id, geo), prices)

    def _outage(self, ticket: Ticket, exc: StoreUnavailable) -> Ticket:
        closed = (ticket.budgets and not self._spend_fail_open) or (ticket.wants and not self._rate_fail_open)
        now = time.monotonic()
        self.unchecked += 0 if closed else 1
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            log.error(
                "limits: the limits store is unreachable (%s); %s (%d requests passed unchecked so far)",
                exc,
                "refusing requests that a limit applies to" if closed else "passing requests unchecked",
                self.unchecked,
            )
        if closed:
            raise Refusal(
                503,
                "api_error",
                "orgwarden cannot reach its limits store (Redis), and the limits that apply to this request"
                " are set to fail closed: try again shortly",
            )
        ticket.checked = False
        return ticket

    def _spend_refusal(
        self, counter: str, rules: Sequence[SpendRule], now: datetime, headers: list[tuple[bytes, bytes]]
    ) -> Refusal:
        rule = next(r for r in rules if r.counter(now) == counter)
        _, end = period_window(rule.period, now)
        whose = {"organization": "", "workspace": "workspace ", "api_key": "API key ", "user": "user "}[rule.scope_type]
        message = (
            f"You have reached your specified {whose}API usage limits. "
            f"You will regain access on {end:%Y-%m-%d} at {end:%H:%M} UTC."
        )
        self.refused["spend"] += 1
        return Refusal(400, "invalid_request_error", message, headers=headers)

    def _rate_refusal(
        self, admission: Admission, wants: Sequence[BucketWant], headers: list[tuple[bytes, bytes]]
    ) -> Refusal:
        want = next(w for w in wants if w.name == admission.blocking_bucket)
        group = want.name.split(":")[3]
        seconds = max(1, math.ceil(admission.retry_after))
        self.refused["rate"] += 1
        message = (
            f"This request would exceed your {_level_of(want.name)} rate limit of {want.spec.limit}"
            f" {_UNITS[want.spec.limiter]} for {self._display.get(group, group)}; try again in {seconds} s."
        )
        return Refusal(429, "rate_limit_error", message, headers=[*headers, (b"retry-after", str(seconds).encode())])

    # -- Message Batches (``gateway.batches``) -------------------------------------------------------

    async def admit_batch(self, grant: KeyGrant, requests: Sequence[tuple[Mapping[str, Any], bytes]] | None) -> Ticket:
        """Admit one Message Batches call: one request of the ``batch`` rate-limit group, and, for a
        create (``requests``: each request's params and their JSON), the worst case of every request
        at batch prices reserved on every spend budget of the key. The reservation is held until
        ``settle_batch``; a 429 / 400 / 503 ``Refusal`` as ``admit`` gives."""
        now = self._clock()
        rates = self._rate_plan("batch", grant, None, False)
        wants = self._bucket_wants(rates, None) if rates.buckets else []
        budgets: list[BudgetWant] = []
        spend, worst = _NO_SPEND, 0
        if requests is not None:
            spend = self._spend_plan(grant, now)
            if spend.budgets:
                for index, (params, body) in enumerate(requests):
                    try:
                        worst += self._worst_case(params, body, _web_search_tools(params), batch=True)
                    except Refusal as refusal:  # name the request it is about
                        refusal.message = f"requests[{index}].params: {refusal.message}"
                        raise
                budgets = [BudgetWant(counter, limit, worst) for counter, limit in spend.budgets]
        ticket = Ticket(wants, budgets, spend, worst, now)
        if not wants and not budgets:
            return ticket
        try:
            admission = await self.store.admit(wants, budgets)
        except StoreUnavailable as exc:
            return self._outage(ticket, exc)
        ticket.headers = _headers(admission, rates)
        if admission.allowed:
            return ticket
        if admission.blocking_counter is not None:
            raise self._spend_refusal(admission.blocking_counter, spend.rules, now, ticket.headers)
        raise self._rate_refusal(admission, wants, ticket.headers)

    def release_batch(self, ticket: Ticket) -> None:
        """Give back a batch's spend reservation whole (the upstream did not take the batch)."""
        if ticket.checked and ticket.budgets:
            self.store.settle([], dict.fromkeys(ticket.spend.reserved, -ticket.worst), _settled_quietly)

    def settle_batch(self, reserved: Sequence[str], counters: Sequence[str], worst: int, cost: int) -> None:
        """Replace a batch's reservation of ``worst`` on ``reserved`` by its metered ``cost``, which
        also goes into its other ``counters`` (as ``settle`` does for a request)."""
        deltas = dict.fromkeys(counters, cost) if cost else {}
        for name in reserved:
            deltas[name] = cost - worst
        if deltas:
            self.store.settle([], deltas, _settled_quietly)

    def settle(self, ticket: Ticket, extracted: Extracted, cost: int) -> None:
        """Replace the reservation with what the request really used and cost. Nothing waits for
        it (see ``gateway.limiter``): spend alerts look at the counters once the store has them."""
        spend = ticket.spend
        if not ticket.checked or (not ticket.wants and not spend.counters):
            return
        usage = extracted.usage
        uncached = usage.input_tokens + usage.cache_creation_5m + usage.cache_creation_1h
        corrections: list[BucketWant] = []
        for want in ticket.wants:
            limiter = want.spec.limiter
            # Identity tests, not a dict keyed by the enum: Enum.__hash__ is Python code.
            if limiter is _ITPM:
                used = uncached + usage.cache_read
            elif limiter is _ITPM_CACHE_AWARE:
                used = uncached
            elif limiter is _OTPM:
                used = usage.output_tokens
            else:
                continue  # a request is a request: nothing to correct
            if want.amount != used:
                corrections.append(BucketWant(want.name, want.spec, want.amount - used))
        # Every counter of the request's scopes gets its cost; those a budget reserved on get it
        # less the reservation (even when that is 0), others only a cost that is not 0.
        deltas: dict[str, int]
        if ticket.budgets:
            corrected = cost - ticket.worst
            if cost:
                deltas = dict.fromkeys(spend.counters, cost)
                for name in spend.reserved:
                    deltas[name] = corrected  # (keeps its place among the counters)
            else:
                deltas = dict.fromkeys(spend.reserved, corrected)
        else:
            deltas = dict.fromkeys(spend.counters, cost) if cost else {}
        if not corrections and not deltas:
            return
        alerts = self._alerts
        if alerts is None or not spend.alerts:
            self.store.settle(corrections, deltas, _settled_quietly)
            return

        def settled(values: Mapping[str, int] | StoreUnavailable) -> None:
            if isinstance(values, StoreUnavailable):
                _settled_quietly(values)
                return
            for rule, counter in spend.alerts:
                value = values.get(counter)
                if value is not None:
                    alerts.observe(rule, value, ticket.at)

        self.store.settle(corrections, deltas, settled)


def _settled_quietly(values: Mapping[str, int] | StoreUnavailable) -> None:
    """A settlement no alert reads: only a failure is worth a word."""
    if isinstance(values, StoreUnavailable):
        log.error("limits: cannot settle a request's reservation (%s); it stays reserved", values)


_NO_TOOLS: Sequence[Mapping[str, Any]] = ()


def _web_search_tools(request: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    """The request's web search tools (a ``tools`` entry whose type starts with ``web_search``)."""
    tools = request.get("tools")
    if not tools or not isinstance(tools, list):
        return _NO_TOOLS
    return [tool for tool in tools if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search")]


def _web_search_uses(searches: Sequence[Mapping[str, Any]]) -> int:
    """The most web searches the request allows (``max_uses``); a 400 when a tool sets none, as
    nothing then bounds them (called only while a spend limit applies)."""
    total = 0
    for tool in searches:
        uses = tool.get("max_uses")
        if not isinstance(uses, int) or isinstance(uses, bool) or uses < 0:
            raise Refusal(
                400,
                "invalid_request_error",
                "tools: a web_search tool without max_uses cannot be bounded while a spend limit applies: set max_uses",
            )
        total += uses
    return total


# Server tools whose results the upstream adds to the input (tool types are versioned: a prefix).
_FETCHING_TOOLS = ("web_search", "web_fetch", "code_execution", "mcp_toolset")
# A body without any of these cannot name a fetched source, and is not walked.
_SOURCE_MARKERS = (b'"url"', b'"file"')
_FETCHED_SOURCES = ("url", "file")  # a tuple: a client-sent "type" may be unhashable


def _fetches_content(request: Mapping[str, Any], body: bytes) -> bool:
    """Whether the upstream adds input that is not in the body: a server tool that fetches, MCP
    servers, or a content block whose ``source`` is a URL or a file."""
    if request.get("mcp_servers"):
        return True
    tools = request.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict) and str(tool.get("type", "")).startswith(_FETCHING_TOOLS):
                return True
    if not any(body.find(marker) != -1 for marker in _SOURCE_MARKERS):
        return False
    return _names_fetched_source(request.get("messages")) or _names_fetched_source(request.get("system"))


def _names_fetched_source(value: Any) -> bool:
    """A ``source`` object of type ``url`` or ``file`` anywhere in ``value`` (tool results nest them).
    Walked with a stack, not recursion: the body may be nested up to the parser's limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            source = item.get("source")
            if isinstance(source, dict) and source.get("type") in _FETCHED_SOURCES:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
