"""Rows to wire objects: the spec's fields plus the SDK's (COMPAT.md), nothing else.

Dicts are built by hand rather than through response models: the shapes are small and fixed, and
this is both the fastest and the most exact way to say what goes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from orgwarden.domain.audit_chain import HASHED_FIELDS, timestamp
from orgwarden.domain.clock import rfc3339
from orgwarden.domain.limits import PICODOLLARS_PER_CENT, RateGroup
from orgwarden.domain.statuses import api_key_status, invite_status
from orgwarden.services.cursors import CursorPage
from orgwarden.services.rate_limits import RateLimitEntry
from orgwarden.services.spend_limits import EffectiveSpend
from orgwarden.storage.pagination import Page
from orgwarden.storage.tables import (
    ApiKey,
    AuditEvent,
    CcPolicyConfig,
    Invite,
    Organization,
    SpendLimit,
    User,
    Workspace,
    WorkspaceMember,
)

if TYPE_CHECKING:
    from orgwarden.services.cc_policies import Configuration, GroupPolicy

T = TypeVar("T")
JSON = dict[str, Any]


def organization(org: Organization) -> JSON:
    return {"id": org.id, "name": org.name, "type": "organization"}


def organization_settings(org: Organization) -> JSON:
    """orgwarden's own settings of the organization (``/v1/organizations/me/settings``, an extension)."""
    return {"type": "organization_settings", "offboarding_key_policy": org.offboarding_key_policy}


def user(row: User) -> JSON:
    return {
        "id": row.id,
        "added_at": rfc3339(row.added_at),
        "email": row.email,
        "name": row.name,
        "role": row.role,
        "type": "user",
    }


def invite(row: Invite, now: datetime, rbac_group_ids: Sequence[str] = ()) -> JSON:
    return {
        "id": row.id,
        "accepted_at": rfc3339(row.accepted_at),
        "email": row.email,
        "expires_at": rfc3339(row.expires_at),
        "invited_at": rfc3339(row.invited_at),
        "rbac_group_ids": list(rbac_group_ids),
        "role": row.role,
        "status": invite_status(row.status, row.expires_at, now),
        "type": "invite",
    }


def workspace(row: Workspace) -> JSON:
    return {
        "id": row.id,
        "archived_at": rfc3339(row.archived_at),
        # Anthropic's encryption compartment; orgwarden has one per workspace, named after it.
        "compartment_id": "cmpt_" + row.id.removeprefix("wrkspc_"),
        "created_at": rfc3339(row.created_at),
        "data_residency": {
            "allowed_inference_geos": row.allowed_inference_geos,
            "default_inference_geo": row.default_inference_geo,
            "workspace_geo": row.workspace_geo,
        },
        "display_color": row.display_color,
        "external_key_id": None,
        "name": row.name,
        "tags": row.tags,
        "type": "workspace",
        "user_profile_id": None,
    }


def member(row: WorkspaceMember) -> JSON:
    return {
        "type": "workspace_member",
        "user_id": row.user_id,
        "workspace_id": row.workspace_id,
        "workspace_role": row.role,
    }


def api_key(row: ApiKey, default_workspace_id: str, now: datetime) -> JSON:
    return {
        "id": row.id,
        "created_at": rfc3339(row.created_at),
        "created_by": {"id": row.created_by_id, "type": row.created_by_type},
        "expires_at": rfc3339(row.expires_at),
        "name": row.name,
        "partial_key_hint": row.partial_key_hint,
        "principal": None,
        "scope": {"type": "workspace", "workspace_id": row.workspace_id},
        "status": api_key_status(row.status, row.expires_at, now),
        "type": "api_key",
        # The spec: null when the key belongs to the default workspace.
        "workspace_id": None if row.workspace_id == default_workspace_id else row.workspace_id,
    }


def page(result: Page[T], render: Callable[[T], JSON], key: Callable[[T], str] | None = None) -> JSON:
    items: Sequence[T] = result.items
    data = [render(item) for item in items]
    ids = [key(item) for item in items] if key else [d["id"] for d in data]
    return {
        "data": data,
        "first_id": ids[0] if ids else None,
        "has_more": result.has_more,
        "last_id": ids[-1] if ids else None,
    }


def cursor_page(result: CursorPage[T], render: Callable[[T], JSON]) -> JSON:
    """The ``page`` / ``next_page`` list shape (rate limits, spend limits)."""
    return {"data": [render(item) for item in result.items], "next_page": result.next_page}


# -- rate limits ----------------------------------------------------------------------------------


def rate_group(group: RateGroup) -> JSON:
    return {"id": group.group_id, "display_name": group.display_name, "type": group.type}


def _models(group: RateGroup) -> list[str] | None:
    return list(group.models) if group.models is not None else None


def rate_limit(entry: RateLimitEntry) -> JSON:
    """An organization entry: the spec's fields plus the SDK's ``id`` and ``group``."""
    return {
        "id": entry.entry_id,
        "group": rate_group(entry.group),
        "group_type": entry.group.type,
        "limits": [{"type": v.type, "value": v.value} for v in entry.limits],
        "models": _models(entry.group),
        "type": "rate_limit",
    }


def workspace_rate_limit(entry: RateLimitEntry) -> JSON:
    return {
        "group": rate_group(entry.group),
        "group_type": entry.group.type,
        "limits": [
            {"org_limit": v.org_limit, "source": {"type": v.source}, "type": v.type, "value": v.value}
            for v in entry.limits
        ],
        "models": _models(entry.group),
        "rate_limit_id": entry.entry_id,
        "type": "workspace_rate_limit",
        "workspace_id": entry.scope_id,
    }


def api_key_rate_limit(entry: RateLimitEntry) -> JSON:
    """Extension: an API key's own values, shaped like a workspace entry."""
    return {
        "api_key_id": entry.scope_id,
        "group": rate_group(entry.group),
        "group_type": entry.group.type,
        "limits": [{"source": {"type": v.source}, "type": v.type, "value": v.value} for v in entry.limits],
        "models": _models(entry.group),
        "rate_limit_id": entry.entry_id,
        "type": "api_key_rate_limit",
    }


# -- spend limits ---------------------------------------------------------------------------------


def spend_scope(scope_type: str, scope_id: str) -> JSON:
    if scope_type == "workspace":
        return {"type": "workspace", "workspace_id": scope_id}
    if scope_type == "api_key":
        return {"type": "api_key", "api_key_id": scope_id}
    if scope_type == "user":
        return {"type": "user", "user_id": scope_id}
    return {"type": "organization"}


def cents(picodollars: int) -> str:
    """Picodollars as a decimal string of cents with at most three decimals, rounded down (the
    report never shows more than was spent): 12_050_500_000_000 -> ``"1205.05"``."""
    value = (Decimal(picodollars) / PICODOLLARS_PER_CENT).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    text = format(value.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def spend_limit(row: SpendLimit) -> JSON:
    return {
        "id": row.id,
        "alert_thresholds": list(row.alert_thresholds),
        "amount": None if row.amount_cents is None else str(row.amount_cents),
        "created_at": rfc3339(row.created_at),
        "currency": row.currency,
        "is_enabled": True,
        "period": row.period,
        "scope": spend_scope(row.scope_type, row.scope_id),
        "type": "spend_limit",
        "updated_at": rfc3339(row.updated_at),
    }


def spend_summary(row: EffectiveSpend) -> JSON:
    """A row of the effective report: an API key's (the actor is the key) or a user's."""
    limit = row.limit
    if row.user is not None:
        user = row.user
        return {
            "actor": {"type": "user_actor", "user_id": user.id, "email_address": user.email, "name": user.name,
                      "deleted": False},
            "amount": None if limit.amount_cents is None else str(limit.amount_cents),
            "currency": limit.currency,
            "period": row.period,
            "period_to_date_spend": cents(row.spent_picodollars),
            "scope": spend_scope("user", user.id),
            "source": spend_scope(limit.scope_type, limit.scope_id),
            "spend_limit_id": limit.id,
        }  # fmt: skip
    return {
        "actor": {"type": "scoped_api_key_actor", "scoped_api_key_id": row.api_key_id},
        "amount": None if limit.amount_cents is None else str(limit.amount_cents),
        "currency": limit.currency,
        "period": row.period,
        "period_to_date_spend": cents(row.spent_picodollars),
        "scope": spend_scope("api_key", row.api_key_id),
        "source": spend_scope(limit.scope_type, limit.scope_id),
        "spend_limit_id": limit.id,
    }


# -- audit log ------------------------------------------------------------------------------------


def audit_event(row: AuditEvent) -> JSON:
    """Every stored field of the event. Without ``type`` and ``hash`` this is exactly the object
    the hash covers (``domain.audit_chain``), so an export can be checked without orgwarden."""
    record: JSON = {"type": "audit_event"}
    record.update((name, getattr(row, name)) for name in HASHED_FIELDS)
    record["occurred_at"] = timestamp(row.occurred_at)
    record["hash"] = row.hash
    return record


# -- Claude Code policies (Managed Settings API shapes, and orgwarden's extension fields) --------


def cc_configuration(c: Configuration) -> dict[str, Any]:
    return {
        "mode": {"type": c.mode},
        "mode_updated_at": rfc3339(c.mode_updated_at) if c.mode_updated_at else None,
        "rbac_group_order": c.order,
        "rbac_group_order_version": c.order_version,
        "type": "claude_code_managed_settings_configuration",
    }


def cc_default(config: CcPolicyConfig | None) -> dict[str, Any]:
    return {
        "settings": config.default_settings if config else None,
        "type": "claude_code_rbac_group_default_managed_settings",
        "updated_at": rfc3339(config.default_updated_at) if config and config.default_updated_at else None,
        "allowed_models": config.default_allowed_models if config else None,
        "denied_models": config.default_denied_models if config else [],
    }


def cc_group_summary(view: GroupPolicy) -> dict[str, Any]:
    row = view.row
    return {
        "created_at": rfc3339(row.created_at),
        "rbac_group_id": row.rbac_group_id,
        "rbac_group_status": {"type": view.status},
        "type": "claude_code_rbac_group_managed_settings_summary",
        "updated_at": rfc3339(row.updated_at),
    }


def cc_group(view: GroupPolicy) -> dict[str, Any]:
    row = view.row
    return {
        **cc_group_summary(view),
        "settings": row.settings,
        "type": "claude_code_rbac_group_managed_settings",
        "email_domains": row.email_domains,
        "allowed_models": row.allowed_models,
        "denied_models": row.denied_models,
    }
