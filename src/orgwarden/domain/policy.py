"""Who may do what: one policy function, one list of permissions.

Every Admin API route declares the permission it needs (``api.routing.admin_route`` refuses to register
one that does not). Today the Admin API is for admin keys only, as at Anthropic: an admin key may do
everything in its organization; a regular API key may do nothing here (403). Later principals (console
users with org roles, workspace admins) are added in this one function.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

ActorKind = Literal["admin_api_key", "api_key", "cli", "invite_token", "system", "user"]


class Permission(enum.Enum):
    ORGANIZATION_READ = "organization:read"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    INVITES_READ = "invites:read"
    INVITES_WRITE = "invites:write"
    WORKSPACES_READ = "workspaces:read"
    WORKSPACES_WRITE = "workspaces:write"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    RATE_LIMITS_READ = "rate_limits:read"
    RATE_LIMITS_WRITE = "rate_limits:write"
    SPEND_LIMITS_READ = "spend_limits:read"
    SPEND_LIMITS_WRITE = "spend_limits:write"
    USAGE_READ = "usage:read"  # usage, cost and Claude Code reports
    AUDIT_READ = "audit:read"  # the audit log; nothing may write it but the use cases themselves
    TUNNELS_READ = "tunnels:read"
    TUNNELS_WRITE = "tunnels:write"  # also reveal: it hands out a credential


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: the audit trail's "who" and the policy's subject."""

    kind: ActorKind
    id: str
    organization_id: str
    user_id: str | None = None


def allows(actor: Actor, permission: Permission) -> bool:
    """Whether ``actor`` holds ``permission`` in its own organization."""
    return actor.kind in ("admin_api_key", "cli", "system")
