"""Rows to wire objects: the spec's fields plus the SDK's (COMPAT.md), nothing else.

Dicts are built by hand rather than through response models: the shapes are small and fixed, and
this is both the fastest and the most exact way to say what goes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from orgwarden.domain.clock import rfc3339
from orgwarden.domain.statuses import api_key_status, invite_status
from orgwarden.storage.pagination import Page
from orgwarden.storage.tables import ApiKey, Invite, Organization, User, Workspace, WorkspaceMember

T = TypeVar("T")
JSON = dict[str, Any]


def organization(org: Organization) -> JSON:
    return {"id": org.id, "name": org.name, "type": "organization"}


def user(row: User) -> JSON:
    return {
        "id": row.id,
        "added_at": rfc3339(row.added_at),
        "email": row.email,
        "name": row.name,
        "role": row.role,
        "type": "user",
    }


def invite(row: Invite, now: datetime) -> JSON:
    return {
        "id": row.id,
        "accepted_at": rfc3339(row.accepted_at),
        "email": row.email,
        "expires_at": rfc3339(row.expires_at),
        "invited_at": rfc3339(row.invited_at),
        "rbac_group_ids": [],
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
