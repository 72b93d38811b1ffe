"""The usage report and the cost report, read from the usage rollups (never from raw records).

Both take their parameters as the query string gives them (strings), so the Admin API and the CLI
check them identically and refuse with the same messages, each naming the parameter.

Time range (spec: "buckets that start on or after ``starting_at``", "buckets that end before
``ending_at``", snapped to the start of the minute, hour or day in UTC):

- the first bucket is the one holding ``starting_at``; ``page`` (the ``next_page`` of the previous
  answer: the start of the next bucket, in RFC 3339) replaces it;
- with ``ending_at``, the last bucket is the last one that ends at or before it (a bucket still open
  at ``ending_at`` is not returned: its total would include usage after ``ending_at``);
- without ``ending_at``, buckets run up to and including the one holding the present moment;
- every bucket in the range is returned, empty ones with ``results: []``, at most ``limit`` of them;
  ``has_more`` says whether buckets remain, and ``next_page`` is where they start.

Dimensions orgwarden does not have: every request is made with an API key, so ``account_id`` and
``service_account_id`` are always null, and filtering on them matches nothing. ``workspace_id`` is
null for the default workspace (spec), and that workspace's id is accepted as a filter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from orgwarden.domain.catalog import Catalog
from orgwarden.domain.pricing import picodollars_to_cents
from orgwarden.domain.rollups import STEP, floor
from orgwarden.errors import InvalidRequest
from orgwarden.services.context import Context
from orgwarden.storage.rollups import RollupQuery
from orgwarden.storage.uow import UnitOfWorkFactory

FAST_MODE_BETA = "fast-mode-2026-02-01"
LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}  # bucket_width -> (default, maximum)
COST_LIMITS = (7, 31)

USAGE_GROUPS = (
    "api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo", "speed",
    "account_id", "service_account_id",
)  # fmt: skip
NO_SUCH_DIMENSION = ("account_id", "service_account_id")
USAGE_FILTERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    # query parameter -> (dimension, allowed values or None for any)
    "api_key_ids": ("api_key_id", None),
    "workspace_ids": ("workspace_id", None),
    "models": ("model", None),
    "service_tiers": ("service_tier", ("standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount")),
    "context_window": ("context_window", ("0-200k", "200k-1M")),
    "inference_geos": ("inference_geo", ("global", "us", "not_available")),
    "speeds": ("speed", ("standard", "fast")),
    "account_ids": ("account_id", None),
    "service_account_ids": ("service_account_id", None),
}
COST_GROUPS = ("workspace_id", "description")

# token type (report) -> (tokens column, cost column, description label)
TOKEN_TYPES = (
    ("uncached_input_tokens", "input_tokens", "cost_input", "Input Tokens"),
    ("output_tokens", "output_tokens", "cost_output", "Output Tokens"),
    ("cache_read_input_tokens", "cache_read_tokens", "cost_cache_read", "Cache Read Input Tokens"),
    ("cache_creation.ephemeral_5m_input_tokens", "cache_creation_5m_tokens", "cost_cache_write_5m",
     "Cache Write Input Tokens (5m)"),
    ("cache_creation.ephemeral_1h_input_tokens", "cache_creation_1h_tokens", "cost_cache_write_1h",
     "Cache Write Input Tokens (1h)"),
)  # fmt: skip
TOKEN_MEASURES = (
    "input_tokens", "output_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_tokens",
    "web_search_requests",
)  # fmt: skip
COST_MEASURES = (
    "cost_input", "cost_output", "cost_cache_write_5m", "cost_cache_write_1h", "cost_cache_read", "cost_web_search",
)  # fmt: skip


def rfc3339(moment: datetime) -> str:
    """Bucket edges as the spec's examples write them: ``2025-08-01T00:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: {value!r} is not an RFC 3339 timestamp (e.g. 2025-08-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name}: {value!r} has no time zone; add Z or an offset (e.g. 2025-08-01T00:00:00Z)")
    return moment.astimezone(UTC)


def cents(picodollars: int) -> str:
    """Cents as a plain decimal string, exact: ``"123.45"``, ``"0.0003"``, ``"0"``."""
    value = picodollars_to_cents(picodollars)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def parse_limit(raw: str | None, default: int, maximum: int, width: str) -> int:
    if raw is None:
        return default
    try:
        number = int(raw)
    except ValueError:
        raise InvalidRequest(f"limit: {raw!r} is not an integer") from None
    if number < 1:
        raise InvalidRequest(f"limit: must be at least 1, got {number}")
    if number > maximum:
        raise InvalidRequest(f"limit: at most {maximum} buckets for bucket_width {width}, got {number}")
    return number


@dataclass(frozen=True, slots=True)
class Window:
    """The buckets a report answers with: ``count`` buckets from ``start``, more after them or not."""

    width: str
    start: datetime
    count: int
    has_more: bool

    @property
    def end(self) -> datetime:
        return self.start + STEP[self.width] * self.count

    def starts(self) -> list[datetime]:
        return [self.start + STEP[self.width] * i for i in range(self.count)]

    def page(self) -> dict[str, Any]:
        return {"has_more": self.has_more, "next_page": rfc3339(self.end) if self.has_more else None}


def window(
    width: str, starting_at: str | None, ending_at: str | None, page: str | None, limit: int, now: datetime
) -> Window:
    if starting_at is None:
        raise InvalidRequest("starting_at: required (an RFC 3339 timestamp, e.g. 2025-08-01T00:00:00Z)")
    first = floor(parse_time("starting_at", starting_at), width)
    step = STEP[width]
    if ending_at is not None:
        end_at = parse_time("ending_at", ending_at)
        if end_at <= parse_time("starting_at", starting_at):
            raise InvalidRequest(f"ending_at: {ending_at} is not after starting_at {starting_at}")
        last_end = floor(end_at, width)
    else:
        last_end = floor(now, width) + step
    start = first
    if page is not None:
        try:
            start = parse_time("page", page)
        except InvalidRequest:
            raise InvalidRequest(f"page: {page!r} is not a next_page value of this report") from None
        if floor(start, width) != start or start < first:
            raise InvalidRequest(f"page: {page!r} is not a next_page value of this report")
    total = max(0, (last_end - start) // step)
    count = min(total, limit)
    return Window(width, start, count, total > count)


class ReportService:
    def __init__(self, uow: UnitOfWorkFactory, catalog: Catalog) -> None:
        self._uow = uow
        self._catalog = catalog

    async def usage(
        self,
        ctx: Context,
        *,
        starting_at: str | None,
        ending_at: str | None = None,
        bucket_width: str | None = None,
        group_by: Sequence[str] = (),
        filters: Mapping[str, Sequence[str]] | None = None,
        limit: str | None = None,
        page: str | None = None,
        betas: Collection[str] = (),
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/organizations/usage_report/messages``, as a JSON-ready dict."""
        width = bucket_width or "1d"
        if width not in LIMITS:
            raise InvalidRequest(f"bucket_width: {width!r} is not one of 1m, 1h, 1d")
        groups = _unique(group_by)
        for name in groups:
            if name not in USAGE_GROUPS:
                raise InvalidRequest(f"group_by: {name!r} is not one of {', '.join(USAGE_GROUPS)}")
        filters = filters or {}
        wanted: dict[str, list[str]] = {}
        for parameter, values in filters.items():
            if parameter not in USAGE_FILTERS:
                raise InvalidRequest(f"{parameter}: not a filter of this report")
            dimension, allowed = USAGE_FILTERS[parameter]
            for value in values:
                if allowed is not None and value not in allowed:
                    raise InvalidRequest(f"{parameter}: {value!r} is not one of {', '.join(allowed)}")
            if values:
                wanted[dimension] = list(dict.fromkeys(values))
        if ("speed" in groups or "speed" in wanted) and FAST_MODE_BETA not in betas:
            which = "group_by speed" if "speed" in groups else "speeds"
            raise InvalidRequest(f"{which} requires the anthropic-beta header {FAST_MODE_BETA}")
        default, maximum = LIMITS[width]
        span = window(width, starting_at, ending_at, page, parse_limit(limit, default, maximum, width), _now(now))

        stored_groups = [g for g in groups if g not in NO_SUCH_DIMENSION]
        rows: list[Any] = []
        default_workspace = None
        if span.count and not any(d in wanted for d in NO_SUCH_DIMENSION):
            async with self._uow() as uow:
                default_workspace = (await uow.workspaces.default(ctx.organization_id)).id
                query = RollupQuery(
                    ctx.organization_id, width, span.start, span.end, stored_groups, wanted, TOKEN_MEASURES
                )
                rows = list(await uow.rollups.sums(query))
        # Rows are (bucket_start, *stored_groups, *TOKEN_MEASURES), read by position: a report can
        # have tens of thousands of them, and a lookup by name costs more than the rest of the loop.
        at = {name: i for i, name in enumerate(("bucket_start", *stored_groups, *TOKEN_MEASURES))}
        groups_at = [(name, at[name]) for name in stored_groups]
        by_workspace = "workspace_id" in at
        input_at, output_at, read_at = at["input_tokens"], at["output_tokens"], at["cache_read_tokens"]
        write_5m_at, write_1h_at = at["cache_creation_5m_tokens"], at["cache_creation_1h_tokens"]
        search_at = at["web_search_requests"]
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            result: dict[str, Any] = dict.fromkeys(USAGE_GROUPS)
            for name, index in groups_at:
                result[name] = row[index]
            if by_workspace and result["workspace_id"] == default_workspace:
                result["workspace_id"] = None  # spec: null for the default workspace
            result["uncached_input_tokens"] = int(row[input_at])
            result["cache_creation"] = {
                "ephemeral_1h_input_tokens": int(row[write_1h_at]),
                "ephemeral_5m_input_tokens": int(row[write_5m_at]),
            }
            result["cache_read_input_tokens"] = int(row[read_at])
            result["output_tokens"] = int(row[output_at])
            result["server_tool_use"] = {"web_search_requests": int(row[search_at])}
            bucket = by_bucket.get(row[0])
            if bucket is None:
                bucket = by_bucket[row[0]] = []
            bucket.append(result)
        return _buckets(span, by_bucket)

    async def cost(
        self,
        ctx: Context,
        *,
        starting_at: str | None,
        ending_at: str | None = None,
        bucket_width: str | None = None,
        group_by: Sequence[str] = (),
        limit: str | None = None,
        page: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/organizations/cost_report``, as a JSON-ready dict: amounts in cents, exact."""
        width = bucket_width or "1d"
        if width != "1d":
            raise InvalidRequest(f"bucket_width: the cost report has only 1d buckets, got {width!r}")
        groups = _unique(group_by)
        for name in groups:
            if name not in COST_GROUPS:
                raise InvalidRequest(f"group_by: {name!r} is not one of {', '.join(COST_GROUPS)}")
        span = window(width, starting_at, ending_at, page, parse_limit(limit, *COST_LIMITS, width), _now(now))
        by_workspace = "workspace_id" in groups
        by_description = "description" in groups
        stored = (["workspace_id"] if by_workspace else []) + (
            ["model", "service_tier", "context_window", "inference_geo"] if by_description else []
        )
        rows: list[Any] = []
        default_workspace = None
        if span.count:
            async with self._uow() as uow:
                default_workspace = (await uow.workspaces.default(ctx.organization_id)).id
                query = RollupQuery(ctx.organization_id, width, span.start, span.end, stored, {},
                                    (*TOKEN_MEASURES, *COST_MEASURES))  # fmt: skip
                rows = list(await uow.rollups.sums(query))
        # (bucket, output fields...) -> picodollars: rows that read the same are merged. Rows are
        # (bucket_start, *stored, *TOKEN_MEASURES, *COST_MEASURES), read by position (see ``usage``).
        at = {name: i for i, name in enumerate(("bucket_start", *stored, *TOKEN_MEASURES, *COST_MEASURES))}
        costs_at = [at[name] for name in COST_MEASURES]
        # (token type, its tokens' index, its cost's index, position of its description)
        kinds = [(token_type, at[tokens], at[cost], i) for i, (token_type, tokens, cost, _) in enumerate(TOKEN_TYPES)]
        searches_at, search_cost_at = at["web_search_requests"], at["cost_web_search"]
        descriptions: dict[str, list[str]] = {}  # model -> its description per token type
        amounts: dict[datetime, dict[tuple[Any, ...], int]] = {}
        for row in rows:
            workspace = row[1] if by_workspace else None
            if workspace == default_workspace:
                workspace = None
            bucket = amounts.get(row[0])
            if bucket is None:
                bucket = amounts[row[0]] = {}
            if not by_description:
                key: tuple[Any, ...] = (workspace, None, None, None, None, None, None, None)
                bucket[key] = bucket.get(key, 0) + sum(int(row[i]) for i in costs_at)
                continue
            first = 2 if by_workspace else 1
            model, tier, context_window, geo = row[first : first + 4]
            tier = "batch" if tier == "batch" else "standard"
            labels = descriptions.get(model)
            if labels is None:
                name = self._display_name(model)
                labels = descriptions[model] = [f"{name} Usage - {label}" for _, _, _, label in TOKEN_TYPES]
            for token_type, tokens_at, cost_at, label_at in kinds:
                amount = int(row[cost_at])
                if amount == 0 and int(row[tokens_at]) == 0:
                    continue
                key = (workspace, "tokens", labels[label_at], model, tier, token_type, context_window, geo)
                bucket[key] = bucket.get(key, 0) + amount
            if int(row[searches_at]) or int(row[search_cost_at]):
                key = (workspace, "web_search", "Web Search", None, None, None, None, None)
                bucket[key] = bucket.get(key, 0) + int(row[search_cost_at])
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        for start, bucket in amounts.items():
            by_bucket[start] = [
                {
                    "workspace_id": key[0], "cost_type": key[1], "description": key[2], "model": key[3],
                    "service_tier": key[4], "token_type": key[5], "context_window": key[6], "inference_geo": key[7],
                    "amount": cents(bucket[key]), "currency": "USD",
                }
                for key in sorted(bucket, key=_sort_key)
            ]  # fmt: skip
        return _buckets(span, by_bucket)

    def _display_name(self, model: str) -> str:
        found = self._catalog.find(model)
        return found.display_name if found is not None else model


def _buckets(span: Window, by_bucket: Mapping[datetime, list[dict[str, Any]]]) -> dict[str, Any]:
    step = STEP[span.width]
    data = [
        {"starting_at": rfc3339(start), "ending_at": rfc3339(start + step), "results": by_bucket.get(start, [])}
        for start in span.starts()
    ]
    return {"data": data, **span.page()}


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """None first, then values in order, position by position. Flat ``(is set, value, is set, ...)``
    compares exactly as a tuple of ``(is set, value)`` pairs, without building a pair per field
    (a cost report can have tens of thousands of rows to order)."""
    a, b, c, d, e, f, g, h = key
    return (
        a is not None, a or "", b is not None, b or "", c is not None, c or "", d is not None, d or "",
        e is not None, e or "", f is not None, f or "", g is not None, g or "", h is not None, h or "",
    )  # fmt: skip


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def total_cents(report: Mapping[str, Any]) -> Decimal:
    """The sum of every amount in a cost report, exactly (for callers and tests that reconcile)."""
    return sum((Decimal(r["amount"]) for bucket in report["data"] for r in bucket["results"]), Decimal(0))
