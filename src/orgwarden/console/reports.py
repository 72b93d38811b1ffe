"""Usage and cost (``/console/usage``, ``/console/cost``) and their CSV exports.

The pages call ``services.reports`` exactly as ``api/routes/reports.py`` does, with the same
parameters (``starting_at``, ``ending_at``, ``bucket_width``, ``group_by``, the filters, ``page``),
and show one page of buckets as a chart and a table. The table's rows come from one function
(``usage_rows`` / ``cost_rows``) that the CSV export calls too, with the same parameters: the CSV
holds exactly the rows shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from orgwarden.api.routing import services
from orgwarden.console import charts, filters
from orgwarden.console.csv import csv_response
from orgwarden.console.pages import ConsolePages, Viewer
from orgwarden.console.render import render
from orgwarden.domain.policy import Permission
from orgwarden.services.reports import COST_GROUPS, LIMITS, USAGE_FILTERS, USAGE_GROUPS

routes = ConsolePages()

# The groupings and filters the pages offer: the API's, less those needing a beta header (speed)
# and service_account_id (orgwarden has no service accounts: always null).
USAGE_GROUP_CHOICES: Final = tuple(g for g in USAGE_GROUPS if g not in ("speed", "service_account_id"))
USAGE_FILTER_CHOICES: Final = tuple(f for f in USAGE_FILTERS if f not in ("speeds", "service_account_ids"))
FILTER_LABELS: Final = {
    "api_key_ids": "API key ids",
    "workspace_ids": "Workspace ids",
    "models": "Models",
    "service_tiers": "Service tiers",
    "context_window": "Context window",
    "inference_geos": "Inference geos",
    "account_ids": "User ids (access-token traffic)",
}
TOKEN_COLUMNS: Final = (
    ("uncached_input_tokens", "Input"),
    ("cache_creation.ephemeral_5m_input_tokens", "Cache write 5m"),
    ("cache_creation.ephemeral_1h_input_tokens", "Cache write 1h"),
    ("cache_read_input_tokens", "Cache read"),
    ("output_tokens", "Output"),
    ("server_tool_use.web_search_requests", "Web searches"),
)
COST_COLUMNS: Final = (
    "workspace_id", "cost_type", "description", "model", "service_tier", "token_type", "context_window",
    "inference_geo",
)  # fmt: skip
_SERIES: Final = 5  # a chart stacks the 5 largest groups and "other"


@dataclass
class Table:
    """What a report page shows (and its CSV exports): header, rows, the chart's series."""

    header: list[str]
    rows: list[list[str]]
    numeric: tuple[int, ...]
    days: list[str] = field(default_factory=list)  # bucket labels, in order
    series: list[tuple[str, list[float]]] = field(default_factory=list)
    next_page: str | None = None


def _value(result: dict[str, Any], dotted: str) -> Any:
    value: Any = result
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _label(start: str, width: str) -> str:
    """A bucket's label: the day for 1d, day and time for 1h and 1m (UTC)."""
    return start[:10] if width == "1d" else start[:16].replace("T", " ")


def _series(labels: list[str], totals: dict[str, list[float]]) -> list[tuple[str, list[float]]]:
    """The largest groups as series, the rest summed as "other"."""
    ranked = sorted(totals, key=lambda name: -sum(totals[name]))
    series = [(name, totals[name]) for name in ranked[:_SERIES]]
    rest = ranked[_SERIES:]
    if rest:
        series.append(("other", [sum(totals[name][i] for name in rest) for i in range(len(labels))]))
    return series


def _group_name(result: dict[str, Any], groups: Sequence[str], default: str = "all") -> str:
    if not groups:
        return default
    parts = []
    for g in groups:
        value = result.get(g)
        parts.append("default" if value is None and g == "workspace_id" else _text(value) or "none")
    return " · ".join(parts)


# --- usage -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    starting_at: str | None
    ending_at: str | None
    bucket_width: str
    group_by: list[str]
    filters: dict[str, list[str]]
    page: str | None

    def params(self) -> dict[str, str | list[str] | None]:
        return {
            "starting_at": self.starting_at, "ending_at": self.ending_at, "bucket_width": self.bucket_width,
            "group_by": self.group_by, **self.filters, "page": self.page,
        }  # fmt: skip


def usage_query(request: Request) -> UsageQuery:
    return UsageQuery(
        starting_at=filters.one(request, "starting_at") or filters.month_start().isoformat(),
        ending_at=filters.one(request, "ending_at"),
        bucket_width=filters.one(request, "bucket_width") or "1d",
        group_by=filters.many(request, "group_by"),
        filters={name: filters.many(request, name) for name in USAGE_FILTER_CHOICES},
        page=filters.one(request, "page"),
    )


async def usage_report(request: Request, who: Viewer, q: UsageQuery) -> dict[str, Any]:
    """The Admin API's usage report for ``q`` (one page at the largest bucket count)."""
    maximum = LIMITS.get(q.bucket_width, (0, 31))[1]
    return await services(request).reports.usage(
        who.context,
        starting_at=filters.timestamp(q.starting_at),
        ending_at=filters.timestamp(q.ending_at),
        bucket_width=q.bucket_width,
        group_by=q.group_by,
        filters=q.filters,
        limit=str(maximum),
        page=q.page,
    )


def usage_rows(report: dict[str, Any], q: UsageQuery) -> Table:
    """One row per (bucket, group): bucket start, the groups, the token counts."""
    groups = [g for g in q.group_by if g in USAGE_GROUPS]
    header = ["starting_at", *groups, *(name for name, _ in TOKEN_COLUMNS)]
    rows: list[list[str]] = []
    labels = [_label(bucket["starting_at"], q.bucket_width) for bucket in report["data"]]
    totals: dict[str, list[float]] = {}
    for i, bucket in enumerate(report["data"]):
        for result in bucket["results"]:
            counts = [int(_value(result, name) or 0) for name, _ in TOKEN_COLUMNS]
            rows.append([bucket["starting_at"], *(_text(result.get(g)) for g in groups), *map(str, counts)])
            name = _group_name(result, groups)
            totals.setdefault(name, [0.0] * len(labels))[i] += sum(counts[:5])  # tokens, not searches
    numeric = tuple(range(1 + len(groups), len(header)))
    return Table(header, rows, numeric, labels, _series(labels, totals), report.get("next_page"))


@routes.page("GET", "/console/usage", permission=Permission.USAGE_READ, nav="Usage")
async def usage(request: Request, who: Viewer) -> Response:
    """Token usage per bucket, grouped and filtered as the usage report API allows."""
    q = usage_query(request)
    table = usage_rows(await usage_report(request, who, q), q)
    return _report_page(request, who, "usage", q.params(), table, unit="tokens")


@routes.page("GET", "/console/usage.csv", permission=Permission.USAGE_READ)
async def usage_csv(request: Request, who: Viewer) -> Response:
    q = usage_query(request)
    table = usage_rows(await usage_report(request, who, q), q)
    return csv_response("usage.csv", table.header, table.rows)


# --- cost ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostQuery:
    starting_at: str | None
    ending_at: str | None
    group_by: list[str]
    account_ids: list[str]
    page: str | None

    def params(self) -> dict[str, str | list[str] | None]:
        return {
            "starting_at": self.starting_at, "ending_at": self.ending_at, "group_by": self.group_by,
            "account_ids": self.account_ids, "page": self.page,
        }  # fmt: skip


def cost_query(request: Request) -> CostQuery:
    return CostQuery(
        starting_at=filters.one(request, "starting_at") or filters.month_start().isoformat(),
        ending_at=filters.one(request, "ending_at"),
        group_by=filters.many(request, "group_by"),
        account_ids=filters.many(request, "account_ids"),
        page=filters.one(request, "page"),
    )


async def cost_report(request: Request, who: Viewer, q: CostQuery) -> dict[str, Any]:
    """The Admin API's cost report for ``q`` (one page of up to 31 days)."""
    return await services(request).reports.cost(
        who.context,
        starting_at=filters.timestamp(q.starting_at),
        ending_at=filters.timestamp(q.ending_at),
        bucket_width="1d",
        group_by=q.group_by,
        limit="31",
        page=q.page,
        account_ids=q.account_ids,
    )


def cost_rows(report: dict[str, Any], q: CostQuery) -> Table:
    """One row per (day, cost line): the day, the line's fields, its amount in cents (exact)."""
    extra = ["account_id"] if "account_id" in q.group_by else []
    header = ["starting_at", *COST_COLUMNS, *extra, "amount_cents"]
    groups = [g for g in q.group_by if g in COST_GROUPS and g != "description"]
    if "description" in q.group_by:
        groups.append("model")
    labels = [_label(bucket["starting_at"], "1d") for bucket in report["data"]]
    totals: dict[str, list[float]] = {}
    rows: list[list[str]] = []
    for i, bucket in enumerate(report["data"]):
        for result in bucket["results"]:
            rows.append(
                [bucket["starting_at"], *(_text(result.get(c)) for c in (*COST_COLUMNS, *extra)), result["amount"]]
            )
            name = _group_name(result, groups, "total")
            totals.setdefault(name, [0.0] * len(labels))[i] += float(Decimal(result["amount"]) / 100)
    return Table(header, rows, (len(header) - 1,), labels, _series(labels, totals), report.get("next_page"))


@routes.page("GET", "/console/cost", permission=Permission.USAGE_READ, nav="Cost")
async def cost(request: Request, who: Viewer) -> Response:
    """Cost per day in USD, grouped as the cost report API allows."""
    q = cost_query(request)
    table = cost_rows(await cost_report(request, who, q), q)
    return _report_page(request, who, "cost", q.params(), table, unit="USD")


@routes.page("GET", "/console/cost.csv", permission=Permission.USAGE_READ)
async def cost_csv(request: Request, who: Viewer) -> Response:
    q = cost_query(request)
    table = cost_rows(await cost_report(request, who, q), q)
    return csv_response("cost.csv", table.header, table.rows)


# --- the page ----------------------------------------------------------------------------------------


def chart_of(table: Table, title: str, unit: str) -> Markup:
    if len(table.series) <= 1:
        values = table.series[0][1] if table.series else [0.0] * len(table.days)
        return charts.bar_chart(list(zip(table.days, values, strict=True)), title=title, unit=unit)
    return charts.stacked_bars(table.days, table.series, title=title, unit=unit)


def _report_page(
    request: Request, who: Viewer, kind: str, params: dict[str, str | list[str] | None], table: Table, *, unit: str
) -> Response:
    title = "Usage" if kind == "usage" else "Cost"
    chart_title = "Tokens per bucket" if kind == "usage" else "Cost per day (USD)"
    shown = {k: v for k, v in params.items() if k != "page"}
    next_url = None
    if table.next_page:
        next_url = f"/console/{kind}?{filters.query({**shown, 'page': table.next_page})}"
    chart_rows = [
        [day, *(charts.fmt(values[i], unit) for _, values in table.series)] for i, day in enumerate(table.days)
    ]
    return render(
        request,
        who,
        "report.html",
        title=title,
        kind=kind,
        params=params,
        groups=USAGE_GROUP_CHOICES if kind == "usage" else COST_GROUPS,
        filter_names=USAGE_FILTER_CHOICES if kind == "usage" else ("account_ids",),
        filter_labels=FILTER_LABELS,
        widths=tuple(LIMITS) if kind == "usage" else ("1d",),
        chart=chart_of(table, chart_title, unit),
        chart_title=chart_title,
        chart_header=["Bucket", *(name for name, _ in table.series)] if table.series else ["Bucket", "Total"],
        chart_rows=chart_rows if table.series else [[day, charts.fmt(0, unit)] for day in table.days],
        table=table,
        csv_url=f"/console/{kind}.csv?{filters.query(params)}",
        next_url=next_url,
    )
