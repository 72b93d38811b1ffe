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

``account_id`` is the user whose access token (``ow-at01-…``) made the request (the rollups' ``user_id``),
null for API-key traffic; such a request has no API key, so its ``api_key_id`` is null. orgwarden has
no service accounts: ``service_account_id`` is always null, and filtering on it matches nothing.
``workspace_id`` is null for the default workspace (spec), and that workspace's id is accepted as a
filter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from orgwarden.domain.catalog import Catalog
from orgwarden.domain.rollups import STEP, floor
from orgwarden.errors import InvalidRequest
from orgwarden.services.context import Context
from orgwarden.storage.rollups import CostQuery, RollupQuery
from orgwarden.storage.uow import UnitOfWorkFactory

FAST_MODE_BETA = "fast-mode-2026-02-01"
LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}  # bucket_width -> (default, maximum)
COST_LIMITS = (7, 31)

USAGE_GROUPS = (
    "api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo", "speed",
    "account_id", "service_account_id",
)  # fmt: skip
NO_SUCH_DIMENSION = ("service_account_id",)
STORED_AS = {"account_id": "user_id"}  # report dimension -> rollup column, where they differ
NOT_SET = ("api_key_id", "account_id")  # stored as "" when absent (a key column): reported as null
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
COST_GROUPS = ("workspace_id", "description", "account_id")  # account_id: an orgwarden extension

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
    "web_search_requests", "estimated_requests",
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
    """Cents as a plain decimal string, exact: ``"123.45"``, ``"0.0003"``, ``"0"`` (1 cent is 10^10
    picodollars). Integer arithmetic, the same text as formatting ``picodollars_to_cents``' Decimal
    with trailing zeros dropped, several times faster (a cost report can have 60,000 amounts)."""
    whole, fraction = divmod(abs(picodollars), _PICODOLLARS_PER_CENT)
    sign = "-" if picodollars < 0 else ""
    if fraction:
        return f"{sign}{whole}.{fraction:010d}".rstrip("0")
    return f"{sign}{whole}" if whole else "0"


_PICODOLLARS_PER_CENT = 10**10


def cents_of_text(picodollars: str) -> str:
    """``cents(int(picodollars))`` for a sum read as decimal text, by moving its decimal point: no
    parsing into an integer and back (a 31-day cost report by description has 63,000 amounts)."""
    if not (picodollars.isascii() and picodollars.isdigit()):  # a sign: not a sum of non-negative amounts
        return cents(int(picodollars))
    whole, fraction = picodollars[:-10].lstrip("0") or "0", picodollars[-10:].rjust(10, "0").rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


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

        report_groups = [g for g in groups if g not in NO_SUCH_DIMENSION]
        stored_groups = [STORED_AS.get(g, g) for g in report_groups]
        stored_filters = {STORED_AS.get(d, d): values for d, values in wanted.items()}
        rows: list[Any] = []
        default_workspace = None
        if span.count and not any(d in wanted for d in NO_SUCH_DIMENSION):
            async with self._uow() as uow:
                default_workspace = (await uow.workspaces.default(ctx.organization_id)).id
                query = RollupQuery(
                    ctx.organization_id, width, span.start, span.end, stored_groups, stored_filters, TOKEN_MEASURES
                )
                rows = list(await uow.rollups.sums(query))
        # Rows are (bucket_start, *stored_groups, *TOKEN_MEASURES), read by position: a report can
        # have tens of thousands of them, and a lookup by name costs more than the rest of the loop.
        at = {name: i for i, name in enumerate(("bucket_start", *stored_groups, *TOKEN_MEASURES))}
        groups_at = [(name, at[STORED_AS.get(name, name)]) for name in report_groups]
        unset_at = [name for name in report_groups if name in NOT_SET]
        by_workspace = "workspace_id" in at
        input_at, output_at, read_at = at["input_tokens"], at["output_tokens"], at["cache_read_tokens"]
        write_5m_at, write_1h_at = at["cache_creation_5m_tokens"], at["cache_creation_1h_tokens"]
        search_at, estimated_at = at["web_search_requests"], at["estimated_requests"]
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            result: dict[str, Any] = dict.fromkeys(USAGE_GROUPS)
            for name, index in groups_at:
                result[name] = row[index]
            for name in unset_at:
                result[name] = result[name] or None  # "": none (a user token's key, a key's user)
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
            result["estimated_requests"] = int(row[estimated_at])  # extension: see the README
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
        account_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """``GET /v1/organizations/cost_report``, as a JSON-ready dict: amounts in cents, exact.

        Extension: ``group_by[]=account_id`` (each line gets ``account_id``: the user of user-token
        traffic, null for API keys) and ``account_ids[]`` (only those users' traffic), not together
        with ``description``."""
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
        by_account = "account_id" in groups
        accounts = _unique(account_ids)
        if by_description and (by_account or accounts):
            which = "group_by account_id" if by_account else "account_ids"
            raise InvalidRequest(f"{which} cannot be combined with group_by description (orgwarden extension)")
        if not span.count:
            return _buckets(span, {})
        if by_description:
            return await self._cost_by_description(ctx, span, by_workspace)
        stored = (["workspace_id"] if by_workspace else []) + (["user_id"] if by_account else [])
        filters = {"user_id": accounts} if accounts else {}
        async with self._uow() as uow:
            default_workspace = (await uow.workspaces.default(ctx.organization_id)).id
            query = RollupQuery(ctx.organization_id, width, span.start, span.end, stored, filters, COST_MEASURES)
            rows: list[Any] = list(await uow.rollups.sums(query))
        # (bucket, (workspace, account)) -> picodollars: the default workspace's rows (null) merge with
        # no others'; an account "" (API-key traffic) is null
        amounts: dict[datetime, dict[tuple[str | None, str | None], int]] = {}
        for row in rows:
            workspace = row[1] if by_workspace else None
            if workspace == default_workspace:
                workspace = None
            account = (row[len(stored)] or None) if by_account else None
            bucket = amounts.get(row[0])
            if bucket is None:
                bucket = amounts[row[0]] = {}
            group = (workspace, account)
            bucket[group] = bucket.get(group, 0) + sum(int(amount) for amount in row[1 + len(stored) :])
        by_bucket = {
            start: [
                {
                    "workspace_id": workspace, "cost_type": None, "description": None, "model": None,
                    "service_tier": None, "token_type": None, "context_window": None, "inference_geo": None,
                    "amount": cents(bucket[(workspace, account)]), "currency": "USD",
                    **({"account_id": account} if by_account else {}),
                }
                for workspace, account in sorted(
                    bucket, key=lambda g: (g[0] is not None, g[0] or "", g[1] is not None, g[1] or "")
                )
            ]
            for start, bucket in amounts.items()
        }  # fmt: skip
        return _buckets(span, by_bucket)

    async def _cost_by_description(self, ctx: Context, span: Window, by_workspace: bool) -> dict[str, Any]:
        """Lines per description. SQL merges and sums (``UsageRollups.cost_lines``: a row per bucket,
        workspace, model, tier, context window and geo, each token type's amount beside the others,
        null where it has no line, in order); this only puts each line at its place and writes it."""
        async with self._uow() as uow:
            default_workspace = (await uow.workspaces.default(ctx.organization_id)).id
            query = CostQuery(
                ctx.organization_id, span.width, span.start, span.end, default_workspace,
                [(tokens, cost) for _, tokens, cost, _ in TOKEN_TYPES], by_workspace,
            )  # fmt: skip
            rows = await uow.rollups.cost_lines(query)
        # After the bucket and the workspace, the report orders lines by description, model, tier,
        # token type, context window and geo. A model's token types have descriptions of their own, so
        # (description, model, token type) takes one rank per (model, token type), and tier, context
        # window and geo follow the rows' own order: lines are dealt into their rank's list, row by row.
        lines = sorted(
            (f"{self._display_name(model)} Usage - {label}", model, token_type, kind)
            for model in {row[2] for row in rows}
            for kind, (token_type, _, _, label) in enumerate(TOKEN_TYPES)
        )
        per_model: dict[str, list[tuple[int, str, str]]] = {}
        for rank, (description, model, token_type, kind) in enumerate(lines):
            per_model.setdefault(model, [(0, "", "")] * len(TOKEN_TYPES))[kind] = (rank, description, token_type)
        amounts_at = slice(6, 6 + len(TOKEN_TYPES))
        searches_at, search_cost_at = 6 + len(TOKEN_TYPES), 7 + len(TOKEN_TYPES)
        by_bucket: dict[datetime, list[dict[str, Any]]] = {}
        at, count = 0, len(rows)
        while at < count:
            stored_start, workspace = rows[at][0], rows[at][1]
            ranked: list[list[dict[str, Any]]] = [[] for _ in lines]
            searches = search_cost = 0
            while at < count and rows[at][0] == stored_start and rows[at][1] == workspace:
                row = rows[at]
                at += 1
                model, tier, context_window, geo = row[2], row[3], row[4], row[5]
                for (rank, description, token_type), amount in zip(per_model[model], row[amounts_at], strict=True):
                    if amount is not None:
                        ranked[rank].append(
                            {
                                "workspace_id": workspace, "cost_type": "tokens", "description": description,
                                "model": model, "service_tier": tier, "token_type": token_type,
                                "context_window": context_window, "inference_geo": geo, "amount": cents_of_text(amount),
                                "currency": "USD",
                            }
                        )  # fmt: skip
                searches += int(row[searches_at])
                search_cost += int(row[search_cost_at])
            results = by_bucket.setdefault(stored_start.replace(tzinfo=UTC), [])
            for ranked_lines in ranked:
                results += ranked_lines
            if searches or search_cost:  # after every token line: cost type "web_search" > "tokens"
                results.append(
                    {
                        "workspace_id": workspace, "cost_type": "web_search", "description": "Web Search",
                        "model": None, "service_tier": None, "token_type": None, "context_window": None,
                        "inference_geo": None, "amount": cents(search_cost), "currency": "USD",
                    }
                )  # fmt: skip
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


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def total_cents(report: Mapping[str, Any]) -> Decimal:
    """The sum of every amount in a cost report, exactly (for callers and tests that reconcile)."""
    return sum((Decimal(r["amount"]) for bucket in report["data"] for r in bucket["results"]), Decimal(0))
