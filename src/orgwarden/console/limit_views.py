"""Rate and spend limits as the console shows and changes them, at any level.

Shared by the organization's limits page (``console.limits``) and a workspace's page
(``console.workspaces``): the rows each table shows, and the two writes both pages offer (set a
spend limit, set a group's rate limits). Every read and write is the Admin API's own service call
with the viewer's context, so what a role may see or change is decided there, not here. Spend
limits are an organization-wide permission (``spend_limits:*``: admins and billing); the services do
not check it themselves (the Admin API's route guard does), so ``may_spend`` is asked before any
spend-limit call, here, the one place that makes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from orgwarden.console import settings_fields as fields
from orgwarden.console.pages import Viewer
from orgwarden.domain import policy
from orgwarden.domain.limits import LIMITER_TYPES, PERIODS
from orgwarden.domain.policy import Permission
from orgwarden.errors import PermissionDenied
from orgwarden.services.container import Services
from orgwarden.services.rate_limits import RateLimitEntry
from orgwarden.services.spend_limits import Scope
from orgwarden.storage.tables import SpendLimit

LIMITER_LABELS: Final[Mapping[str, str]] = {
    "requests_per_minute": "Requests / min",
    "input_tokens_per_minute": "Input tokens / min",
    "input_tokens_per_minute_cache_aware": "Input tokens / min (cache-aware)",
    "output_tokens_per_minute": "Output tokens / min",
}
LIMITERS: Final = tuple((kind, LIMITER_LABELS.get(kind, kind)) for kind in LIMITER_TYPES)
PERIOD_CHOICES: Final = PERIODS
MAX_SPEND_ROWS: Final = 1000


@dataclass(frozen=True, slots=True)
class RateRow:
    """One rate-limit group at one level: the values set there and, for a workspace, the
    organization's (which bind too: the lowest value in force wins)."""

    entry_id: str
    name: str
    models: str
    own: Mapping[str, int]
    inherited: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SpendRow:
    id: str
    scope_type: str
    scope_id: str
    scope_label: str
    period: str
    amount: str  # "$500.00" or "no cap"
    thresholds: str
    updated_at: str


def may_spend(who: Viewer, permission: Permission = Permission.SPEND_LIMITS_READ) -> bool:
    """Spend limits are organization-wide: no workspace role grants them."""
    return policy.allows(who.context.actor, permission)


def require_spend(who: Viewer, permission: Permission) -> None:
    if not may_spend(who, permission):
        raise PermissionDenied(f"your organization role ({who.role}) does not have the {permission.value} permission")


def dollars(amount_cents: int | None) -> str:
    if amount_cents is None:
        return "no cap"
    return f"${amount_cents // 100:,}.{amount_cents % 100:02d}"


def _rows(entries: Sequence[RateLimitEntry], services: Services, organization_id: str) -> list[RateRow]:
    by_entry = {entry.entry_id: entry for entry in entries}
    rows = []
    for group in services.rate_limits.groups(organization_id).all:
        entry = by_entry.get(group.entry_id(organization_id))
        level = entry.level if entry is not None else None
        limits = entry.limits if entry is not None else ()
        own = {value.type: value.value for value in limits if value.source == level}
        inherited = {
            value.type: value.org_limit for value in limits if level != "organization" and value.org_limit is not None
        }
        models = ", ".join((group.models or ())[:6]) + (" …" if group.models and len(group.models) > 6 else "")
        rows.append(RateRow(group.entry_id(organization_id), group.display_name, models, own, inherited))
    return rows


async def organization_rate_rows(services: Services, who: Viewer) -> list[RateRow]:
    page = await services.rate_limits.list_organization(who.context)
    return _rows(page.items, services, who.context.organization_id)


async def workspace_rate_rows(services: Services, who: Viewer, workspace_id: str) -> list[RateRow]:
    page = await services.rate_limits.list_workspace(who.context, workspace_id, include_inherited=True)
    return _rows(page.items, services, who.context.organization_id)


async def spend_rows(
    services: Services, who: Viewer, scope_type: str, *, workspace_id: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[SpendRow]:  # fmt: skip
    """The spend limits of one scope type (of one workspace), in creation order."""
    require_spend(who, Permission.SPEND_LIMITS_READ)
    page = await services.spend_limits.list(
        who.context, scope_types=[scope_type], workspace_id=workspace_id, limit=MAX_SPEND_ROWS
    )
    return [_spend_row(row, labels or {}) for row in page.items]


def _spend_row(row: SpendLimit, labels: Mapping[str, str]) -> SpendRow:
    return SpendRow(
        id=row.id,
        scope_type=row.scope_type,
        scope_id=row.scope_id,
        scope_label=labels.get(row.scope_id, row.scope_id),
        period=row.period,
        amount=dollars(row.amount_cents),
        thresholds=", ".join(f"{value}%" for value in row.alert_thresholds),
        updated_at=row.updated_at.strftime("%Y-%m-%d %H:%M UTC"),
    )


async def set_spend(services: Services, who: Viewer, form: Mapping[str, str], scope: Scope) -> SpendLimit:
    """Create or update the limit of ``scope`` for the form's period (the Admin API's upsert)."""
    require_spend(who, Permission.SPEND_LIMITS_WRITE)
    row, _ = await services.spend_limits.set(
        who.context,
        amount=fields.cents(form),
        scope=scope,
        period=fields.optional(form, "period"),
        alert_thresholds=fields.thresholds(form),
    )
    return row


async def delete_spend(services: Services, who: Viewer, spend_limit_id: str) -> SpendLimit:
    require_spend(who, Permission.SPEND_LIMITS_WRITE)
    return await services.spend_limits.delete(who.context, spend_limit_id)


async def describe_spend(services: Services, who: Viewer, spend_limit_id: str) -> SpendRow:
    require_spend(who, Permission.SPEND_LIMITS_READ)
    return _spend_row(await services.spend_limits.get(who.context, spend_limit_id), {})
