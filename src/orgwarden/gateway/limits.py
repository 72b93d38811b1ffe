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
  the model's context window, plus ``max_tokens`` of output, plus the web searches it allows. After
  the response the reservation is replaced by the metered cost, so a limit of X is never passed:
  concurrent requests can fill it to X, not beyond. A model without a price cannot be bounded, so it
  is refused while a spend limit applies (add it to the models file).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orgwarden.domain.buckets import Limiter, Spec
from orgwarden.domain.catalog import Catalog
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


class Alerts(Protocol):
    def observe(self, rule: SpendRule, spent_picodollars: int, now: datetime) -> None: ...


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
        """Metered spend so far in each counter's period, in picodollars."""
        out: dict[str, int] = {}
        async with self._sessions() as session:
            rollups = UsageRollups(session)  # day rows: a period is whole UTC days
            for name in counters:
                scope_type, scope_id, period, start = parse_counter(name)
                _, end = period_window(period, start)
                out[name] = (await rollups.spent(scope_type, [scope_id], start, end)).get(scope_id, 0)
        return out


@dataclass(slots=True)
class Ticket:
    """What a request reserved, so that ``settle`` can correct exactly that."""

    buckets: list[tuple[BucketWant, Limiter]]
    budgets: list[BudgetWant]
    rules: list[SpendRule]
    counters: list[str]
    at: datetime
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    checked: bool = True
    rule_counters: Sequence[str] = ()  # the counter of each of ``rules`` (computed once, in ``admit``)


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


_HeaderPlan = tuple[tuple[bytes, bytes, bytes, tuple[int, ...]], ...]
# Keyed by the limiters' ids (members are singletons; hashing the members would run Enum.__hash__,
# Python code, for each): the same few limiter sequences come back on every request.
_header_plans: dict[tuple[int, ...], _HeaderPlan] = {}


def _header_plan(limiters: Sequence[Limiter]) -> _HeaderPlan:
    """Per header kind in force for wants of these limiters: its three names and the positions of
    the wants it is chosen among (in the order ties are broken)."""
    key = tuple([id(limiter) for limiter in limiters])
    plan = _header_plans.get(key)
    if plan is None:
        if len(_header_plans) >= _PLAN_CACHE_SIZE:  # only a configuration of thousands of levels gets here
            _header_plans.clear()
        plan = _header_plans[key] = _make_header_plan(limiters)
    return plan


def _make_header_plan(limiters: Sequence[Limiter]) -> _HeaderPlan:
    plan = []
    for limit_name, remaining_name, reset_name, members in _HEADER_KINDS:
        positions = tuple(i for limiters_ in members for i, limiter in enumerate(limiters) if limiter in limiters_)
        if positions:
            plan.append((limit_name, remaining_name, reset_name, positions))
    return tuple(plan)


@functools.lru_cache(maxsize=1024)
def _number(value: int) -> bytes:
    return str(value).encode()


def _headers(admission: Admission, wants: Sequence[tuple[BucketWant, Limiter]]) -> list[tuple[bytes, bytes]]:
    """``anthropic-ratelimit-*`` for the most restrictive bucket of each kind in force (the first of
    equally restrictive ones)."""
    levels = admission.levels
    found: list[float] = []
    for want, _ in wants:
        level = levels.get(want.name)
        found.append(want.spec.capacity if level is None else level)
    headers: list[tuple[bytes, bytes]] = []
    for limit_name, remaining_name, reset_name, positions in _header_plan([limiter for _, limiter in wants]):
        best = positions[0]
        for i in positions:
            if found[i] < found[best]:
                best = i
        level = found[best]
        spec = wants[best][0].spec
        rate = spec.rate
        full_in = max(0.0, spec.capacity - level) / rate if rate > 0 else 0.0
        headers.append((limit_name, _number(spec.limit)))
        headers.append((remaining_name, str(max(0, math.floor(level))).encode()))
        headers.append((reset_name, _reset_value(math.ceil(admission.now + full_in))))
    return headers


@dataclass(frozen=True, slots=True)
class _SpendPlan:
    """What a key's requests reserve on a given UTC day: its rules, every counter its cost goes into,
    and one budget (the lowest amount) per counter that a rule reads."""

    rules: tuple[SpendRule, ...]
    rule_counters: tuple[str, ...]
    counters: tuple[str, ...]
    budgets: tuple[tuple[str, int], ...]  # (counter, limit in picodollars), in the order of the rules


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
        self._last_outage_log = 0.0
        # Per-key plans, valid as long as ``self.spend`` / ``self.rates`` are the objects they were
        # computed from (a reload replaces them) and, for spend, for the UTC day in their key.
        self._spend_plans: dict[tuple[str, str, str, date], _SpendPlan] = {}
        self._spend_plans_of: SpendConfig | None = None
        self._bucket_plans: dict[tuple[str, str, str, str], list[tuple[str, Limiter, int, Spec, float]]] = {}
        self._bucket_plans_of: RateLimitConfig | None = None

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
        wants = self._bucket_wants(endpoint, grant, request)
        budgets: list[BudgetWant] = []
        if request:
            plan = self._spend_plan(grant, now)
            if plan.budgets:
                worst = self._worst_case(request, body)
                budgets = [BudgetWant(counter, limit, worst) for counter, limit in plan.budgets]
            ticket = Ticket(
                wants, budgets, list(plan.rules), list(plan.counters), now, rule_counters=plan.rule_counters
            )
        else:
            ticket = Ticket(wants, budgets, [], [], now)
        if not wants and not budgets:
            return ticket
        try:
            admission = await self.store.admit([w for w, _ in wants], budgets)
        except StoreUnavailable as exc:
            return self._outage(ticket, exc)
        ticket.headers = _headers(admission, wants)
        if admission.allowed:
            return ticket
        if admission.blocking_counter is not None:
            raise self._spend_refusal(admission.blocking_counter, ticket.rules, now, ticket.headers)
        raise self._rate_refusal(admission, wants, ticket.headers)

    def _bucket_wants(
        self, endpoint: str, grant: KeyGrant, request: Mapping[str, Any] | None
    ) -> list[tuple[BucketWant, Limiter]]:
        if endpoint == "count_tokens":
            groups = ["token_count"]
        elif endpoint == "messages" and request is not None:
            model_group = self._groups.get(str(request.get("model")))
            groups = [model_group.name] if model_group is not None else []
            if _offers_web_search(request):
                groups.append("web_search")
        else:
            return []
        wants: list[tuple[BucketWant, Limiter]] = []
        estimate = max_tokens = 0
        if request is not None and endpoint == "messages":
            estimate = estimate_request(request)
            raw = request.get("max_tokens")
            max_tokens = raw if isinstance(raw, int) and raw > 0 else 0
        for group in groups:
            for name, limiter, value, spec, capacity in self._bucket_plan(grant, group):
                if limiter is Limiter.REQUESTS_PER_MINUTE:
                    amount = 1.0
                elif group == "web_search" or endpoint != "messages":
                    continue  # token limits of surface groups count nothing the gateway proxies
                elif limiter is Limiter.OUTPUT_TOKENS_PER_MINUTE:
                    amount = float(max_tokens)
                else:
                    amount = float(estimate)
                if amount > capacity:
                    raise Refusal(
                        400,
                        "invalid_request_error",
                        f"this request needs {int(amount)} of your {_level_of(name)} limit of {value}"
                        f" {_UNITS[limiter]} for {self._display.get(group, group)}: it can never fit"
                        + (" (lower max_tokens)" if limiter is Limiter.OUTPUT_TOKENS_PER_MINUTE else ""),
                    )
                wants.append((BucketWant(name, spec, amount), limiter))
        return wants

    def _bucket_plan(self, grant: KeyGrant, group: str) -> list[tuple[str, Limiter, int, Spec, float]]:
        """``(bucket name, limiter, value, spec, capacity)`` of every value in force for the key's
        requests of ``group``, computed once per key and group while the rate limits stay the same."""
        rates = self.rates
        if rates is not self._bucket_plans_of or len(self._bucket_plans) >= _PLAN_CACHE_SIZE:
            self._bucket_plans.clear()
            self._bucket_plans_of = rates
        key = (grant.organization_id, grant.workspace_id, grant.key_id, group)
        plan = self._bucket_plans.get(key)
        if plan is None:
            plan = []
            for name, limiter, value in rates.buckets_for(
                grant.organization_id, grant.workspace_id, False, grant.key_id, group
            ):
                spec = Spec(limiter, value, self._burst)
                plan.append((name, limiter, value, spec, spec.capacity))
            self._bucket_plans[key] = plan
        return plan

    def _spend_plan(self, grant: KeyGrant, now: datetime) -> _SpendPlan:
        """The key's spend rules, counters and budgets on ``now``'s UTC day (every period of a counter
        starts on a UTC day), computed once per key and day while the spend limits stay the same."""
        spend = self.spend
        if spend is not self._spend_plans_of or len(self._spend_plans) >= _PLAN_CACHE_SIZE:
            self._spend_plans.clear()
            self._spend_plans_of = spend
        org, workspace, key_id = grant.organization_id, grant.workspace_id, grant.key_id
        key = (org, workspace, key_id, now.astimezone(UTC).date())
        plan = self._spend_plans.get(key)
        if plan is None:
            rules = tuple(spend.rules_for(org, workspace, key_id))
            rule_counters = tuple(rule.counter(now) for rule in rules)
            limits: dict[str, int] = {}
            for rule, counter in zip(rules, rule_counters, strict=True):
                amount = rule.amount_picodollars
                limits[counter] = min(limits.get(counter, amount), amount)
            counters = tuple(counters_of(org, workspace, key_id, now))
            plan = _SpendPlan(rules, rule_counters, counters, tuple(limits.items()))
            self._spend_plans[key] = plan
        return plan

    def _worst_case(self, request: Mapping[str, Any], body: bytes) -> int:
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
        if model.max_input_tokens:
            tokens = min(tokens, int(model.max_input_tokens))
        raw = request.get("max_tokens")
        output = raw if isinstance(raw, int) and raw > 0 else int(model.max_tokens or 0)
        caching = b"cache_control" in body
        usage = TokenUsage(
            input_tokens=0 if caching else tokens,
            cache_creation_1h=tokens if caching else 0,
            output_tokens=output,
            web_search_requests=_web_search_uses(request),
        )
        geo = request.get("inference_geo")
        return cost_of(self._catalog, model, usage, inference_geo=geo if isinstance(geo, str) else None).total

    def _outage(self, ticket: Ticket, exc: StoreUnavailable) -> Ticket:
        closed = (ticket.budgets and not self._spend_fail_open) or (ticket.buckets and not self._rate_fail_open)
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
        whose = {"organization": "", "workspace": "workspace ", "api_key": "API key "}[rule.scope_type]
        message = (
            f"You have reached your specified {whose}API usage limits. "
            f"You will regain access on {end:%Y-%m-%d} at {end:%H:%M} UTC."
        )
        return Refusal(400, "invalid_request_error", message, headers=headers)

    def _rate_refusal(
        self, admission: Admission, wants: Sequence[tuple[BucketWant, Limiter]], headers: list[tuple[bytes, bytes]]
    ) -> Refusal:
        want, limiter = next(w for w in wants if w[0].name == admission.blocking_bucket)
        group = want.name.split(":")[3]
        seconds = max(1, math.ceil(admission.retry_after))
        message = (
            f"This request would exceed your {_level_of(want.name)} rate limit of {want.spec.limit}"
            f" {_UNITS[limiter]} for {self._display.get(group, group)}; try again in {seconds} s."
        )
        return Refusal(429, "rate_limit_error", message, headers=[*headers, (b"retry-after", str(seconds).encode())])

    async def settle(self, ticket: Ticket, extracted: Extracted, cost: int) -> None:
        """Replace the reservation with what the request really used and cost."""
        if not ticket.checked or (not ticket.buckets and not ticket.counters):
            return
        usage = extracted.usage
        written = usage.cache_creation_5m + usage.cache_creation_1h
        corrections: list[BucketWant] = []
        for want, limiter in ticket.buckets:
            # Identity tests, not a dict keyed by the enum: Enum.__hash__ is Python code.
            if limiter is Limiter.INPUT_TOKENS_PER_MINUTE:
                used = usage.input_tokens + written + usage.cache_read
            elif limiter is Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE:
                used = usage.input_tokens + written
            elif limiter is Limiter.OUTPUT_TOKENS_PER_MINUTE:
                used = usage.output_tokens
            else:
                continue  # a request is a request: nothing to correct
            if want.amount != used:
                corrections.append(BucketWant(want.name, want.spec, want.amount - used))
        reserved = {budget.counter: budget.amount for budget in ticket.budgets}
        deltas = {}
        for name in ticket.counters:
            delta = cost - reserved.get(name, 0)
            if delta or name in reserved:
                deltas[name] = delta
        if not corrections and not deltas:
            return
        try:
            values = await self.store.settle(corrections, deltas)
        except StoreUnavailable as exc:
            log.error("limits: cannot settle a request's reservation (%s); it stays reserved", exc)
            return
        if self._alerts is not None:
            rule_counters = ticket.rule_counters or [rule.counter(ticket.at) for rule in ticket.rules]
            for rule, counter in zip(ticket.rules, rule_counters, strict=True):
                value = values.get(counter)
                if value is not None:
                    self._alerts.observe(rule, value, ticket.at)


def _tools(request: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    tools = request.get("tools")
    if isinstance(tools, list):
        yield from (tool for tool in tools if isinstance(tool, dict))


def _offers_web_search(request: Mapping[str, Any]) -> bool:
    return any(str(tool.get("type", "")).startswith("web_search") for tool in _tools(request))


def _web_search_uses(request: Mapping[str, Any]) -> int:
    """The most web searches the request allows (``max_uses``; 0 when unbounded: priced after)."""
    total = 0
    for tool in _tools(request):
        if str(tool.get("type", "")).startswith("web_search"):
            uses = tool.get("max_uses")
            total += uses if isinstance(uses, int) and uses > 0 else 0
    return total
