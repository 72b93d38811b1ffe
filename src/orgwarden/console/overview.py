"""The overview (``/console``): this month's spend against the limits that apply to the viewer,
spend and tokens per day, the top workspaces, keys, users and models, limits near their cap, and
the audit log's state.

Every member may open it (``organization:read``); each section is shown only when the viewer's role
may use what it reads (``usage:read`` for usage and cost, ``spend_limits:read`` for limits,
``audit:read`` for the audit log), and is read through the same services as the Admin API.

Limits: the spend-limit service's effective read (the limit binding each key and user, with its
scope's period-to-date spend) gives the spend of every limit that binds something; a limit that
binds nothing (a looser organization limit under tighter workspace limits) gets its scope's spend
from the cost report over its period. Meters show the organization's limits, the workspaces' and
the viewer's own user limits; "near the cap" lists every limit at 75 % or more, API keys' included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from orgwarden.api.routing import services
from orgwarden.console import charts, filters
from orgwarden.console.pages import ConsolePages, Viewer
from orgwarden.console.render import render
from orgwarden.domain.limits import PERIODS, period_window
from orgwarden.domain.policy import Permission, may_use
from orgwarden.errors import OrgwardenError
from orgwarden.services.audit_log import audit_filter
from orgwarden.services.reports import rfc3339
from orgwarden.storage.pagination import Cursor
from orgwarden.storage.tables import SpendLimit

routes = ConsolePages()

NEAR: Final = 0.75
TOP: Final = 5
PICODOLLARS_PER_CENT: Final = 10**10
VERIFY_ACTION: Final = "audit_log.verify"  # recorded by the audit page's "verify chain" (/console/audit/verify)
SPEND_TITLE: Final = "Spend per day (USD)"
TOKENS_TITLE: Final = "Tokens per day"
_TOKEN_FIELDS: Final = ("uncached_input_tokens", "cache_read_input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Meter:
    label: str
    period: str
    spent_usd: float
    cap_usd: float | None
    svg: Markup

    @property
    def ratio(self) -> float:
        return self.spent_usd / self.cap_usd if self.cap_usd else 0.0


def _tokens(result: dict[str, Any]) -> int:
    cache = result.get("cache_creation") or {}
    return sum(int(result.get(name) or 0) for name in _TOKEN_FIELDS) + sum(int(v or 0) for v in cache.values())


def _usd(cents_text: str) -> float:
    return float(Decimal(cents_text) / 100)


def _ranked(totals: dict[str | None, float]) -> list[tuple[str | None, float]]:
    return sorted(((k, v) for k, v in totals.items() if v > 0), key=lambda kv: (-kv[1], kv[0] or ""))[:TOP]


class Overview:
    """Reads what the overview shows for one viewer (sections their role may use only)."""

    def __init__(self, request: Request, who: Viewer) -> None:
        self.svc = services(request)
        self.who = who
        self.ctx = who.context
        self.now = datetime.now(UTC)
        self.start = filters.month_start(self.now)
        self._workspace_names: dict[str | None, str] | None = None
        self._period_costs: dict[tuple[str, str], dict[str | None, float]] = {}

    async def workspace_names(self) -> dict[str | None, str]:
        if self._workspace_names is None:
            names: dict[str | None, str] = {None: "Default workspace"}
            if may_use(self.ctx.actor, Permission.WORKSPACES_READ):
                try:
                    page = await self.svc.workspaces.list(self.ctx, Cursor(limit=100), include_default=True)
                    names.update({w.id: w.name for w in page.items})
                except OrgwardenError:
                    pass
            self._workspace_names = names
        return self._workspace_names

    async def cost_by(self, group: str, starting_at: str) -> dict[str, Any]:
        return await self.svc.reports.cost(
            self.ctx, starting_at=starting_at, bucket_width="1d", group_by=[group], limit="31", now=self.now
        )

    async def usage_by(self, group: str) -> dict[str, Any]:
        return await self.svc.reports.usage(
            self.ctx, starting_at=f"{self.start.isoformat()}T00:00:00Z", bucket_width="1d", group_by=[group],
            limit="31", now=self.now,
        )  # fmt: skip

    # -- usage and cost ------------------------------------------------------------------------------

    async def usage(self) -> dict[str, Any]:
        month = f"{self.start.isoformat()}T00:00:00Z"
        by_workspace = await self.cost_by("workspace_id", month)
        self._period_costs[("monthly", "workspace_id")] = _totals(by_workspace, "workspace_id")
        by_account = await self.cost_by("account_id", month)
        by_model = await self.usage_by("model")
        by_key = await self.usage_by("api_key_id")
        days = [bucket["starting_at"][:10] for bucket in by_workspace["data"]]
        spend = [sum(_usd(r["amount"]) for r in b["results"]) for b in by_workspace["data"]]
        tokens = [float(sum(_tokens(r) for r in b["results"])) for b in by_model["data"]]
        names = await self.workspace_names()
        top_workspaces = [
            [names.get(ws, ws or ""), charts.fmt(v, "USD")] for ws, v in _ranked(_totals(by_workspace, "workspace_id"))
        ]
        top_users = []
        for account, v in _ranked({k: x for k, x in _totals(by_account, "account_id").items() if k}):
            top_users.append([await self._user_name(account or ""), charts.fmt(v, "USD")])
        top_keys = []
        for key, v in _ranked({k: x for k, x in _token_totals(by_key, "api_key_id").items() if k}):
            top_keys.append([await self._key_name(key or ""), key or "", charts.fmt(v)])
        top_models = [[m or "", charts.fmt(v)] for m, v in _ranked(_token_totals(by_model, "model"))]
        return {
            "month_spend": sum(spend),
            "month_tokens": sum(tokens),
            "spend_chart": charts.bar_chart(
                list(zip(days, spend, strict=True)), title="Spend per day (USD)", unit="USD"
            ),
            "tokens_chart": charts.bar_chart(list(zip(days, tokens, strict=True)), title="Tokens per day", unit=""),
            "daily_rows": [[d, charts.fmt(s, "USD"), f"{int(t)}"] for d, s, t in zip(days, spend, tokens, strict=True)],
            "top_workspaces": top_workspaces,
            "top_users": top_users,
            "top_keys": top_keys,
            "top_models": top_models,
        }

    async def _user_name(self, user_id: str) -> str:
        try:
            user = await self.svc.users.get(self.ctx, user_id)
        except OrgwardenError:
            return user_id
        return user.email

    async def _key_name(self, key_id: str) -> str:
        try:
            key = await self.svc.api_keys.get(self.ctx, key_id)
        except OrgwardenError:
            return key_id
        return key.name

    # -- limits --------------------------------------------------------------------------------------

    async def limits(self) -> dict[str, Any]:
        spent: dict[str, int] = {}  # spend limit id -> picodollars, from the effective read
        bound: list[tuple[SpendLimit, int]] = []
        page: str | None = None
        for _ in range(10):
            result = await self.svc.spend_limits.effective(self.ctx, periods=PERIODS, limit=1000, page=page)
            for binding in result.items:
                if binding.limit.id not in spent:
                    spent[binding.limit.id] = binding.spent_picodollars
                    bound.append((binding.limit, binding.spent_picodollars))
            page = result.next_page
            if page is None:
                break
        every: list[SpendLimit] = []
        page = None
        for _ in range(10):
            listed = await self.svc.spend_limits.list(self.ctx, limit=1000, page=page)
            every += listed.items
            page = listed.next_page
            if page is None:
                break
        names = await self.workspace_names()
        meters: list[Meter] = []
        for row in sorted(every, key=_limit_order):
            if row.scope_type == "api_key" or (row.scope_type == "user" and row.scope_id != self.who.session.user_id):
                continue
            used = spent[row.id] if row.id in spent else await self._scope_spend(row)
            meters.append(self._meter(row, used, names))
        near = [m for m in meters if m.cap_usd and m.ratio >= NEAR]
        shown = {(m.label, m.period) for m in near}
        for limit, used in bound:
            if limit.scope_type in ("api_key", "user") and limit.amount_cents:
                meter = self._meter(limit, used, names)
                if meter.ratio >= NEAR and (meter.label, meter.period) not in shown:
                    near.append(meter)
        return {"meters": meters, "near": sorted(near, key=lambda m: -m.ratio)}

    def _meter(self, row: SpendLimit, picodollars: int, names: dict[str | None, str]) -> Meter:
        if row.scope_type == "organization":
            label = "Organization"
        elif row.scope_type == "workspace":
            label = f"Workspace {names.get(row.scope_id, row.scope_id)}"
        elif row.scope_type == "user":
            label = "Your user limit" if row.scope_id == self.who.session.user_id else f"User {row.scope_id}"
        else:
            label = f"API key {row.scope_id}"
        used = picodollars / PICODOLLARS_PER_CENT / 100
        cap = row.amount_cents / 100 if row.amount_cents is not None else None
        svg = charts.meter(used, cap, f"{label}, {row.period}")
        return Meter(label, row.period, used, cap, svg)

    async def _scope_spend(self, row: SpendLimit) -> int:
        """A limit's scope spend since its period began, from the cost report (picodollars)."""
        group = "workspace_id" if row.scope_type == "workspace" else "account_id"
        key = (row.period, group)
        if key not in self._period_costs:
            start, _ = period_window(row.period, self.now)
            self._period_costs[key] = _totals(await self.cost_by(group, rfc3339(start)), group)
        totals = self._period_costs[key]
        if row.scope_type == "organization":
            usd = sum(totals.values())
        elif row.scope_type == "workspace":
            default = (await self.svc.api_keys.default_workspace_id(self.ctx.organization_id)) == row.scope_id
            usd = totals.get(None if default else row.scope_id, 0.0)
        else:
            usd = totals.get(row.scope_id, 0.0)
        return int(Decimal(str(usd)) * 100 * PICODOLLARS_PER_CENT)

    # -- audit ---------------------------------------------------------------------------------------

    async def audit(self) -> dict[str, Any]:
        latest = await self.svc.audit_log.list(self.ctx, audit_filter(), limit=1)
        verified = await self.svc.audit_log.list(self.ctx, audit_filter(actions=[VERIFY_ACTION]), limit=1)
        last = verified.items[0] if verified.items else None
        return {
            "latest": latest.items[0].occurred_at if latest.items else None,
            "verified_at": last.occurred_at if last else None,
            "verified_outcome": last.outcome if last else None,
        }


def _limit_order(row: SpendLimit) -> tuple[int, str, int]:
    return (("organization", "workspace", "user").index(row.scope_type) if row.scope_type != "api_key" else 3,
            row.scope_id, PERIODS.index(row.period))  # fmt: skip


def _totals(report: dict[str, Any], group: str) -> dict[str | None, float]:
    """USD per value of ``group`` over every bucket of a cost report."""
    totals: dict[str | None, float] = {}
    for bucket in report["data"]:
        for r in bucket["results"]:
            totals[r.get(group)] = totals.get(r.get(group), 0.0) + _usd(r["amount"])
    return totals


def _token_totals(report: dict[str, Any], group: str) -> dict[str | None, float]:
    totals: dict[str | None, float] = {}
    for bucket in report["data"]:
        for r in bucket["results"]:
            totals[r.get(group)] = totals.get(r.get(group), 0.0) + _tokens(r)
    return totals


def sections(who: Viewer) -> Sequence[str]:
    """The sections ``who`` may see."""
    actor = who.actor
    wanted = [
        ("usage", Permission.USAGE_READ),
        ("limits", Permission.SPEND_LIMITS_READ),
        ("audit", Permission.AUDIT_READ),
    ]
    return [name for name, permission in wanted if may_use(actor, permission)]


@routes.page("GET", "/console", permission=Permission.ORGANIZATION_READ, nav="Overview")
async def overview(request: Request, who: Viewer) -> Response:
    """Every member may open the overview; what it shows depends on their permissions."""
    reader = Overview(request, who)
    shown = sections(who)
    context: dict[str, Any] = {"sections": shown, "month": reader.start.strftime("%B %Y")}
    if "usage" in shown:
        context["usage"] = await reader.usage()
    if "limits" in shown:
        context["limits"] = await reader.limits()
    if "audit" in shown:
        context["audit"] = await reader.audit()
    return render(request, who, "overview.html", title="Overview", **context)
