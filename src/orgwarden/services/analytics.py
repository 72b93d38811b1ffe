"""The SDK's usage and cost analytics (``client.beta.organization.analytics``), from the usage rollups.

Six reports read the same rollups as the spec's usage and cost reports (``services.reports``), through
the same storage query (``UsageRollups.sums``), so their figures agree to the token and the cent:

- ``usage_report`` / ``cost_report``: time buckets, each with its rows (the Enterprise "legacy" shape);
  paged by bucket like the spec's reports (``next_page`` is the next bucket's start).
- ``usage`` / ``cost``: one row per group (and time bucket, with ``time_bucket_width``), ranked by a
  metric or by time, paged with an opaque cursor.
- ``user_usage_report`` / ``user_cost_report``: one row per user (and bucket and group): the traffic
  of users' access tokens (the rollups' ``user_id``); API-key traffic has no user and is left out.

Dimensions orgwarden records: model, context window, inference geo, speed, service tier, workspace,
API key, and the user (``actor``). Others (product surfaces of claude.ai, RBAC groups, Slack, Claude
Tag, Managed Agents, user profiles, child organizations) are not recorded: grouping by one gives
null, filtering on one matches nothing (as the spec's reports treat ``service_account_id``). The new
API's ``product`` is derived: ``message_batches_api`` for the batch tier, else ``messages_api``.
There are no discounts: ``list_amount`` equals ``amount``. Amounts are cents as exact decimal text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orgwarden.domain.rollups import STEP, floor
from orgwarden.errors import InvalidRequest
from orgwarden.services import cursors
from orgwarden.services.context import Context
from orgwarden.services.reports import TOKEN_TYPES, Window, _buckets, cents, parse_limit, parse_time, rfc3339, window
from orgwarden.storage.rollups import RollupQuery
from orgwarden.storage.tables import User
from orgwarden.storage.uow import UnitOfWorkFactory

MAX_RANGE = timedelta(days=31)
MAX_MINUTE_RANGE = timedelta(hours=24)
BUCKET_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 256)}  # bucket_width -> (default, maximum)
MEASURES = (
    "requests", "input_tokens", "output_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens",
    "cache_read_tokens", "web_search_requests", "cost_input", "cost_output", "cost_cache_write_5m",
    "cost_cache_write_1h", "cost_cache_read", "cost_web_search",
)  # fmt: skip
TOKEN_COSTS = tuple((token_type, tokens, cost) for token_type, tokens, cost, _ in TOKEN_TYPES)

CONTEXT_WINDOWS = ("0-200k", "200k-1M")
INFERENCE_GEOS = ("global", "us", "not_available")
SPEEDS = ("fast", "standard")
SERVICE_TIERS = ("standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount")
ACTOR_TYPES = ("user_actor", "api_actor", "service_account_actor", "federated_actor")
ENTERPRISE_PRODUCTS = (
    "chat", "chat_cowork_unified", "claude-tag", "claude_code", "claude_design", "claude_in_chrome", "cowork",
    "office_agent",
)  # fmt: skip
API_PRODUCTS = (
    "chat", "chat_cowork_unified", "claude_code", "claude_console", "claude_design", "claude_in_chrome", "claude_tag",
    "cowork", "managed_agents_api", "message_batches_api", "messages_api", "office_agent",
)  # fmt: skip
BATCH_PRODUCT, MESSAGES_PRODUCT = "message_batches_api", "messages_api"

# The Enterprise reports' dimensions (usage_report, cost_report, and the per-user reports)
ENTERPRISE_GROUPS = (
    "claude_tag_category", "claude_tag_user_id", "context_window", "inference_geo", "model", "product",
    "rbac_group_id", "slack_channel_id", "speed",
)  # fmt: skip
FAN_OUT = ("cost_type", "token_type")  # cost groups that split a row into its components
API_GROUPS = (
    "actor", "actor_type", "agent_id", "api_key_id", "claude_tag_category", "claude_tag_user_id", "context_window",
    "deployment_id", "environment_id", "inference_geo", "model", "organization_id", "product", "rbac_group_id",
    "service_tier", "session_id", "slack_channel_id", "speed", "user_profile_id", "workspace_id",
)  # fmt: skip
MAX_API_GROUPS = 5
# group dimension -> the rollup columns it is read from; a dimension not here is not recorded (null)
COLUMNS: dict[str, tuple[str, ...]] = {
    "model": ("model",), "context_window": ("context_window",), "inference_geo": ("inference_geo",),
    "speed": ("speed",), "service_tier": ("service_tier",), "workspace_id": ("workspace_id",),
    "api_key_id": ("api_key_id",), "actor": ("user_id", "api_key_id"), "actor_type": ("user_id",),
    "product": ("service_tier",),  # the new API's, derived from the tier (the Enterprise reports': null)
}  # fmt: skip
# filter parameter -> (rollup column, allowed values or None), for filters that are a plain IN
COLUMN_FILTERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "models": ("model", None), "context_windows": ("context_window", CONTEXT_WINDOWS),
    "inference_geos": ("inference_geo", INFERENCE_GEOS), "speeds": ("speed", SPEEDS),
    "service_tiers": ("service_tier", SERVICE_TIERS), "workspace_ids": ("workspace_id", None),
    "api_key_ids": ("api_key_id", None), "user_ids": ("user_id", None),
}  # fmt: skip
UNRECORDED_FILTERS = (
    "claude_tag_categories", "claude_tag_user_ids", "rbac_group_ids", "slack_channel_ids", "agent_ids",
    "deployment_ids", "environment_ids", "organization_ids", "session_ids", "user_profile_ids",
)  # fmt: skip
ENTERPRISE_FILTERS = (
    "models", "context_windows", "inference_geos", "speeds", "user_ids", "products", "claude_tag_categories",
    "claude_tag_user_ids", "rbac_group_ids", "slack_channel_ids",
)  # fmt: skip
API_FILTERS = (
    "models", "context_windows", "inference_geos", "speeds", "service_tiers", "workspace_ids", "api_key_ids",
    "actor_ids", "actor_types", "products", "claude_tag_categories", "claude_tag_user_ids", "rbac_group_ids",
    "slack_channel_ids", "agent_ids", "deployment_ids", "environment_ids", "organization_ids", "session_ids",
    "user_profile_ids",
)  # fmt: skip
USAGE_ORDER = ("total_tokens", "output_tokens", "requests", "uncached_input_tokens")
COST_ORDER = ("amount", "list_amount")


@dataclass(frozen=True, slots=True)
class Query:
    """A report's parameters as the query string gave them (strings), checked by the service."""

    starting_at: str | None
    ending_at: str | None = None
    bucket_width: str | None = None
    group_by: Sequence[str] = ()
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    limit: str | None = None
    page: str | None = None
    order: str | None = None
    order_by: str | None = None
    exclude_deleted_users: bool = False


@dataclass(slots=True)
class Totals:
    """The rollups' measures summed over one row of a report."""

    values: list[int] = field(default_factory=lambda: [0] * len(MEASURES))

    def add(self, more: Iterable[int]) -> None:
        self.values = [a + b for a, b in zip(self.values, more, strict=True)]

    def __getitem__(self, name: str) -> int:
        return self.values[_AT[name]]

    @property
    def total_tokens(self) -> int:
        return sum(self[name] for name in MEASURES[1:6])

    @property
    def picodollars(self) -> int:
        return sum(self[name] for name in MEASURES[7:])

    def usage(self) -> dict[str, Any]:
        return {
            "uncached_input_tokens": self["input_tokens"],
            "cache_creation": {
                "ephemeral_1h_input_tokens": self["cache_creation_1h_tokens"],
                "ephemeral_5m_input_tokens": self["cache_creation_5m_tokens"],
            },
            "cache_read_input_tokens": self["cache_read_tokens"],
            "output_tokens": self["output_tokens"],
            "server_tool_use": {"web_search_requests": self["web_search_requests"]},
            "requests": self["requests"],
        }

    def metric(self, name: str) -> int:
        if name == "total_tokens":
            return self.total_tokens
        if name in ("amount", "list_amount"):
            return self.picodollars
        return self[{"uncached_input_tokens": "input_tokens"}.get(name, name)]

    def cost_lines(self, by_cost_type: bool, by_token_type: bool) -> list[dict[str, Any]]:
        """The row's amount, whole (one line) or split into its components (``cost_type`` and/or
        ``token_type``): token lines for token types with tokens or cost, then web search if any."""
        if not (by_cost_type or by_token_type):
            return [_amount(self.picodollars, requests=self["requests"])]
        lines: list[dict[str, Any]] = []
        if by_token_type:
            for token_type, tokens, cost in TOKEN_COSTS:
                if self[tokens] or self[cost]:
                    lines.append(_amount(self[cost], cost_type="tokens", token_type=token_type))
        else:
            token_cost = sum(self[cost] for _, _, cost in TOKEN_COSTS)
            if token_cost or any(self[tokens] for _, tokens, _ in TOKEN_COSTS):
                lines.append(_amount(token_cost, cost_type="tokens"))
        if self["web_search_requests"] or self["cost_web_search"]:
            lines.append(_amount(self["cost_web_search"], cost_type="web_search"))
        return lines


_AT = {name: i for i, name in enumerate(MEASURES)}


def _amount(picodollars: int, **extra: Any) -> dict[str, Any]:
    text = cents(picodollars)
    return {"amount": text, "list_amount": text, "currency": "USD", "requests": None, **extra}


@dataclass(frozen=True, slots=True)
class Span:
    """What a report reads: rows of one width in [start, end), per bucket or merged into one."""

    width: str
    start: datetime
    end: datetime
    bucketed: bool


Key = tuple[Any, ...]  # (bucket start or None, *group values)


class AnalyticsService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    # -- the Enterprise reports: time buckets of rows ---------------------------------------------

    async def usage_report(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/usage_report``: buckets of usage rows."""
        span, groups, filters = self._bucket_report(q, ENTERPRISE_GROUPS, _now(now))
        rows = await self._rows(ctx, Span(span.width, span.start, span.end, True), groups, filters, legacy=True)
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        for (start, *values), totals in rows.items():
            result = {**dict.fromkeys(ENTERPRISE_GROUPS), **dict(zip(groups, values, strict=True)), **totals.usage()}
            by_bucket.setdefault(start, []).append(result)
        return _buckets(span, by_bucket)

    async def cost_report(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/cost_report``: buckets of cost rows (amounts in cents)."""
        span, groups, filters = self._bucket_report(q, (*ENTERPRISE_GROUPS, *FAN_OUT), _now(now))
        plain = [g for g in groups if g not in FAN_OUT]
        rows = await self._rows(ctx, Span(span.width, span.start, span.end, True), plain, filters, legacy=True)
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        for (start, *values), totals in rows.items():
            base = {**dict.fromkeys((*ENTERPRISE_GROUPS, *FAN_OUT)), **dict(zip(plain, values, strict=True))}
            for line in totals.cost_lines("cost_type" in groups, "token_type" in groups):
                by_bucket.setdefault(start, []).append({**base, **line})
        return _buckets(span, by_bucket)

    def _bucket_report(
        self, q: Query, allowed: Sequence[str], now: datetime
    ) -> tuple[Window, list[str], dict[str, list[str]]]:
        width = q.bucket_width or "1d"
        if width not in BUCKET_LIMITS:
            raise InvalidRequest(f"bucket_width: {width!r} is not one of 1d, 1h, 1m")
        start, _ = _range(q.starting_at, q.ending_at, now)
        # without ending_at the buckets run to the one holding now (the spec's reports), at most 31 days
        ending_at = q.ending_at if q.ending_at is not None or start + MAX_RANGE > now else rfc3339(start + MAX_RANGE)
        default, maximum = BUCKET_LIMITS[width]
        limit = parse_limit(q.limit, default, maximum, width)
        span = window(width, q.starting_at, ending_at, q.page, limit, now)
        return span, _groups(q.group_by, allowed), _filters(q.filters, ENTERPRISE_FILTERS, ENTERPRISE_PRODUCTS)

    # -- the new API: ranked rows with a group object ---------------------------------------------

    async def usage(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/usage``."""
        return await self._ranked(ctx, q, _now(now), cost=False)

    async def cost(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/cost``."""
        return await self._ranked(ctx, q, _now(now), cost=True)

    async def _ranked(self, ctx: Context, q: Query, now: datetime, *, cost: bool) -> dict[str, Any]:
        allowed = (*API_GROUPS, *FAN_OUT) if cost else API_GROUPS
        groups = _groups(q.group_by, allowed)
        plain = [g for g in groups if g not in FAN_OUT]
        if len(plain) > MAX_API_GROUPS:
            raise InvalidRequest(f"group_by: at most {MAX_API_GROUPS} dimensions, got {len(plain)}")
        if q.exclude_deleted_users and "actor" not in groups:
            raise InvalidRequest("exclude_deleted_users: requires group_by[]=actor")
        filters = _filters(q.filters, API_FILTERS, API_PRODUCTS)
        span = _span(q.starting_at, q.ending_at, q.bucket_width, now, param="time_bucket_width", whole_hours=True)
        metrics = COST_ORDER if cost else USAGE_ORDER
        order_by = _choice("order_by", q.order_by, (*metrics, "time"), metrics[0])
        descending = _choice("order", q.order, ("asc", "desc"), "desc") == "desc"
        limit = _limit(q.limit, 20)
        kind = "cost" if cost else "usage"
        offset = _offset(kind, q.page)
        rows = await self._rows(ctx, span, plain, filters, legacy=False)
        users = await self._users(ctx, [v[1] for key in rows for v in key[1:] if _is_user_actor(v)])
        items = list(rows.items())
        if q.exclude_deleted_users:
            at = 1 + plain.index("actor")
            items = [(k, t) for k, t in items if not (_is_user_actor(k[at]) and _deleted(users.get(k[at][1])))]
        items = _ranked_order(items, order_by, span.bucketed, descending, "amount" if cost else "total_tokens")
        page, next_page = items[offset : offset + limit], None
        if offset + limit < len(items):
            next_page = cursors.encode(f"{kind}:{offset + limit}")
        data: list[dict[str, Any]] = []
        names = (*API_GROUPS, *FAN_OUT) if cost else API_GROUPS
        for (start, *values), totals in page:
            group = {**dict.fromkeys(names), **{g: _render(g, v, users) for g, v in zip(plain, values, strict=True)}}
            bounds = _bounds(span, start)
            if not cost:
                data.append(
                    {**bounds, "group": group, "usage": {**totals.usage(), "total_tokens": totals.total_tokens}}
                )
                continue
            for line in totals.cost_lines("cost_type" in groups, "token_type" in groups):
                fan = {name: line.pop(name) for name in FAN_OUT if name in line}
                data.append({**bounds, "group": {**group, **fan}, "cost": line})
        return {"data": data, "has_more": next_page is not None, "next_page": next_page}

    # -- per user ---------------------------------------------------------------------------------

    async def user_usage_report(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/user_usage_report``: a row per user (and bucket, group)."""
        return await self._per_user(ctx, q, _now(now), cost=False)

    async def user_cost_report(self, ctx: Context, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/user_cost_report``."""
        return await self._per_user(ctx, q, _now(now), cost=True)

    async def _per_user(self, ctx: Context, q: Query, now: datetime, *, cost: bool) -> dict[str, Any]:
        allowed = (*ENTERPRISE_GROUPS, *FAN_OUT) if cost else ENTERPRISE_GROUPS
        groups = _groups(q.group_by, allowed)
        plain = ["actor", *(g for g in groups if g not in FAN_OUT)]
        filters = _filters(q.filters, ENTERPRISE_FILTERS, ENTERPRISE_PRODUCTS)
        filters.setdefault("actor_types", ["user_actor"])  # users' traffic only
        span = _span(q.starting_at, q.ending_at, q.bucket_width, now, param="bucket_width", whole_hours=False)
        metrics = COST_ORDER if cost else USAGE_ORDER
        order_by = _choice("order_by", q.order_by, metrics, metrics[0])
        descending = _choice("order", q.order, ("asc", "desc"), "desc") == "desc"
        limit = _limit(q.limit, 20)
        kind = "user_cost" if cost else "user_usage"
        offset = _offset(kind, q.page)
        rows = await self._rows(ctx, span, plain, filters, legacy=True)
        users = await self._users(ctx, [key[1][1] for key in rows])
        items = [(k, t) for k, t in rows.items() if not (q.exclude_deleted_users and _deleted(users.get(k[1][1])))]
        items = _ranked_order(items, order_by, False, descending, order_by)
        page, next_page = items[offset : offset + limit], None
        if offset + limit < len(items):
            next_page = cursors.encode(f"{kind}:{offset + limit}")
        names = (*ENTERPRISE_GROUPS, *FAN_OUT) if cost else ENTERPRISE_GROUPS
        data: list[dict[str, Any]] = []
        for (start, actor, *values), totals in page:
            row: dict[str, Any] = {
                "actor": _render("actor", actor, users),
                **dict.fromkeys(names),
                **dict(zip(plain[1:], values, strict=True)),
                **(_bounds(span, start) if span.bucketed else {"starting_at": None, "ending_at": None}),
            }
            if not cost:
                data.append({**row, **totals.usage(), "total_tokens": totals.total_tokens})
                continue
            for line in totals.cost_lines("cost_type" in groups, "token_type" in groups):
                data.append({**row, **line})
        return {"data": data, "has_more": next_page is not None, "next_page": next_page}

    # -- reading ----------------------------------------------------------------------------------

    async def _rows(
        self, ctx: Context, span: Span, groups: Sequence[str], filters: Mapping[str, list[str]], *, legacy: bool
    ) -> dict[Key, Totals]:
        """Totals per (bucket, *group values), read from the rollups and merged in order of key."""
        if any(filters.get(name) for name in UNRECORDED_FILTERS):
            return {}  # a dimension orgwarden does not record: no usage has any of those values
        checks: list[Callable[[Mapping[str, str]], bool]] = []
        columns = {column for g in groups for column in COLUMNS.get(g, ())}
        in_filters = {COLUMN_FILTERS[n][0]: values for n, values in filters.items() if n in COLUMN_FILTERS and values}
        if actor_types := filters.get("actor_types"):
            wanted_types = set(actor_types)
            columns.add("user_id")
            checks.append(lambda c: ("user_actor" if c["user_id"] else "api_actor") in wanted_types)
        if actor_ids := filters.get("actor_ids"):
            wanted_ids = set(actor_ids)
            columns.update(("user_id", "api_key_id"))
            checks.append(lambda c: (c["user_id"] or c["api_key_id"]) in wanted_ids)
        if products := filters.get("products"):
            if legacy:
                return {}  # the Enterprise products are claude.ai surfaces: none is orgwarden's traffic
            tiers = [t for t in SERVICE_TIERS if (BATCH_PRODUCT if t == "batch" else MESSAGES_PRODUCT) in products]
            if not tiers:
                return {}
            in_filters["service_tier"] = [t for t in tiers if t in in_filters.get("service_tier", tiers)]
        ordered = sorted(columns)
        async with self._uow() as uow:
            query = RollupQuery(ctx.organization_id, span.width, span.start, span.end, ordered, in_filters, MEASURES)
            stored = await uow.rollups.sums(query)
        totals: dict[Key, Totals] = {}
        for row in stored:
            found = dict(zip(ordered, row[1 : 1 + len(ordered)], strict=True))
            if not all(check(found) for check in checks):
                continue
            start = row[0].astimezone(UTC) if span.bucketed else None
            key = (start, *(_value(g, found, legacy) for g in groups))
            entry = totals.get(key)
            if entry is None:
                entry = totals[key] = Totals()
            entry.add(int(value) for value in row[1 + len(ordered) :])
        return totals

    async def _users(self, ctx: Context, user_ids: Iterable[str]) -> dict[str, User]:
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        async with self._uow() as uow:
            return {user.id: user for user in await uow.users.with_removed(ctx.organization_id, wanted)}


def _value(group: str, columns: Mapping[str, str], legacy: bool) -> Any:
    """A group's value in a row, hashable: ``("user", id)`` or ``("api", key id)`` for an actor."""
    if group == "actor":
        return ("user", columns["user_id"]) if columns["user_id"] else ("api", columns["api_key_id"])
    if group == "actor_type":
        return "user_actor" if columns["user_id"] else "api_actor"
    if group == "inference_geo":
        return None if columns["inference_geo"] == "not_available" else columns["inference_geo"]
    if group == "api_key_id":
        return columns["api_key_id"] or None
    if group == "product":
        if legacy:
            return None  # the Enterprise reports' products are claude.ai surfaces
        return BATCH_PRODUCT if columns["service_tier"] == "batch" else MESSAGES_PRODUCT
    names = COLUMNS.get(group)
    return columns[names[0]] if names else None  # not recorded: null


def _is_user_actor(value: Any) -> bool:
    return isinstance(value, tuple) and value[0] == "user"


def _deleted(user: User | None) -> bool:
    return user is None or user.removed_at is not None


def _render(group: str, value: Any, users: Mapping[str, User]) -> Any:
    if group != "actor" or value is None:
        return value
    kind, ident = value
    if kind == "api":
        return {"type": "api_actor", "api_key_id": ident}
    user = users.get(ident)
    return {
        "type": "user_actor",
        "user_id": ident,
        "email_address": user.email if user is not None else None,
        "name": (user.name or None) if user is not None else "Deleted User",
        "deleted": _deleted(user),
    }


def _ranked_order(
    items: list[tuple[Key, Totals]], order_by: str, bucketed: bool, descending: bool, within: str
) -> list[tuple[Key, Totals]]:
    """Rows by ``order_by`` (ties: in key order), or by bucket then ``within`` (highest first)."""
    items = sorted(items, key=lambda item: _sortable(item[0]))
    sign = -1 if descending else 1
    if order_by == "time" and bucketed:
        by_metric = sorted(items, key=lambda item: -item[1].metric(within))
        return sorted(by_metric, key=lambda item: sign * item[0][0].timestamp())
    metric = within if order_by == "time" else order_by
    return sorted(items, key=lambda item: sign * item[1].metric(metric))


def _sortable(key: Key) -> str:
    return json.dumps([rfc3339(k) if isinstance(k, datetime) else k for k in key])


def _bounds(span: Span, start: datetime | None) -> dict[str, str]:
    if start is None:
        return {"starting_at": rfc3339(span.start), "ending_at": rfc3339(span.end)}
    return {"starting_at": rfc3339(start), "ending_at": rfc3339(start + STEP[span.width])}


# -- parameters -------------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _range(starting_at: str | None, ending_at: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): ``ending_at`` defaults to the earlier of now and ``starting_at`` + 31 days."""
    if starting_at is None:
        raise InvalidRequest("starting_at: required (an RFC 3339 timestamp, e.g. 2026-08-01T00:00:00Z)")
    start = parse_time("starting_at", starting_at)
    if ending_at is None:
        return start, max(start, min(now, start + MAX_RANGE))
    end = parse_time("ending_at", ending_at)
    if end <= start:
        raise InvalidRequest(f"ending_at: {ending_at} is not after starting_at {starting_at}")
    if end - start > MAX_RANGE:
        raise InvalidRequest("ending_at: the range may span at most 31 days")
    return start, end


def _span(
    starting_at: str | None, ending_at: str | None, width: str | None, now: datetime, *, param: str, whole_hours: bool
) -> Span:
    """The rows a ranked report reads. With a bucket width: its buckets from the one holding
    ``starting_at`` to the last that ends by ``ending_at`` (required). Without: one row per group over
    the range, in whole hours (the new API) or as given to the minute (the per-user reports), read
    from the coarsest rollups that cover it exactly. Without ``ending_at`` the range runs to the end
    of the hour (minute) holding now: orgwarden's figures have no lag, and nothing comes after now."""
    if width is not None:
        if width not in STEP:
            raise InvalidRequest(f"{param}: {width!r} is not one of 1d, 1h, 1m")
        if ending_at is None:
            raise InvalidRequest(f"ending_at: required when {param} is set")
        start, end = _range(starting_at, ending_at, now)
        if width == "1m" and end - start > MAX_MINUTE_RANGE:
            raise InvalidRequest(f"ending_at: with {param} 1m the range may span at most 24 hours")
        return Span(width, floor(start, width), floor(end, width), True)
    start, end = _range(starting_at, ending_at, now)
    unit = "1h" if whole_hours else "1m"
    if ending_at is None and end == now:
        end = floor(now, unit) + STEP[unit]  # as the spec's reports: the hour (minute) holding now counts
    start, end = floor(start, unit), floor(end, unit)
    if end <= start:
        unit = "hour" if whole_hours else "minute"
        raise InvalidRequest(f"ending_at: the range holds no whole {unit} (without {param}, rows cover whole {unit}s)")
    for coarse in ("1d", "1h", "1m"):
        if floor(start, coarse) == start and floor(end, coarse) == end:
            return Span(coarse, start, end, False)
    raise AssertionError("a minute-aligned range")  # pragma: no cover


def _groups(group_by: Sequence[str], allowed: Sequence[str]) -> list[str]:
    groups = list(dict.fromkeys(group_by))
    for name in groups:
        if name not in allowed:
            raise InvalidRequest(f"group_by: {name!r} is not one of {', '.join(allowed)}")
    return groups


def _filters(
    given: Mapping[str, Sequence[str]], allowed: Sequence[str], products: Sequence[str]
) -> dict[str, list[str]]:
    enums: dict[str, tuple[str, ...]] = {
        **{name: values for name, (_, values) in COLUMN_FILTERS.items() if values is not None},
        "actor_types": ACTOR_TYPES, "products": tuple(products),
    }  # fmt: skip
    out: dict[str, list[str]] = {}
    for name, values in given.items():
        if not values:
            continue
        if name not in allowed:
            raise InvalidRequest(f"{name}: not a filter of this report")
        choices = enums.get(name)
        for value in values:
            if choices is not None and value not in choices:
                raise InvalidRequest(f"{name}: {value!r} is not one of {', '.join(choices)}")
            if len(value) > 256:
                raise InvalidRequest(f"{name}: a value longer than 256 characters")
        out[name] = list(dict.fromkeys(values))
    return out


def _choice(name: str, value: str | None, allowed: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise InvalidRequest(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _limit(raw: str | None, default: int, maximum: int = 1000) -> int:
    if raw is None:
        return default
    try:
        number = int(raw)
    except ValueError:
        raise InvalidRequest(f"limit: {raw!r} is not an integer") from None
    if not 1 <= number <= maximum:
        raise InvalidRequest(f"limit: must be between 1 and {maximum}, got {number}")
    return number


def _offset(kind: str, page: str | None) -> int:
    """Where a page starts: an opaque cursor naming the report and the offset of its first row."""
    position = cursors.decode(page)
    if position is None:
        return 0
    report, _, offset = position.partition(":")
    if report != kind or not offset.isdigit() or len(offset) > 9:
        raise InvalidRequest(f"page: {page!r} is not a cursor from this report (use next_page)")
    return int(offset)
