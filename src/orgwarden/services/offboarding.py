"""Offboarding: closing every door a user had, in the caller's unit of work, with one audit event.

``offboard`` runs when a user is removed (Admin API, CLI, SCIM ``DELETE``) or deactivated (CLI, SCIM
``active: false``). Inside the caller's transaction, after taking the organization lock, it:

- refuses to take away the organization's last enabled admin (and, on removal, its only member);
- marks the user (``removed_at`` or ``deactivated_at``); removal also deletes their workspace
  memberships, deactivation keeps them so that reactivation gives the same access back;
- revokes their browser sessions and OAuth tokens (access and refresh), and their admin API keys;
- handles the data-plane API keys they created per the organization's ``offboarding_key_policy``:
  ``deactivate`` (default) sets the ``active`` ones to ``inactive``, ``keep`` leaves them;
- writes a cache event for every key it touched and one for the user (the sign-in repositories
  write their own for tokens and sessions), so that every worker of every instance drops what it
  cached at its next poll of ``cache_events`` (200 ms by default);
- records ONE audit event listing all of it: ``user.remove`` or ``user.deactivate``.

``preview`` answers "what would removing (or deactivating) this user revoke now?" by running
``offboard`` itself in a unit of work that is never committed: the confirm page of the console lists
exactly what the same code would do, and nothing is changed, recorded or announced.

Nothing is given back by reactivation: revoked credentials stay revoked and deactivated keys stay
inactive until an admin turns them on again (the audit event lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from orgwarden.domain.clock import utcnow
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.storage.tables import User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

KEY_POLICIES: Final = frozenset({"deactivate", "keep"})
DEFAULT_KEY_POLICY: Final = "deactivate"

Reason = Literal["removed", "deactivated"]


async def ensure_not_last_admin(uow: UnitOfWork, user: User, doing: str) -> None:
    """Refuse to take away the organization's last enabled admin (the caller holds the org lock)."""
    if user.role != "admin" or user.deactivated_at is not None:
        return
    if await uow.users.count(user.organization_id, role="admin", enabled_only=True) <= 1:
        raise InvalidRequest(f"user {user.id} is the organization's last admin and cannot be {doing}")


async def offboard(uow: UnitOfWork, ctx: Context, user: User, *, reason: Reason) -> dict[str, list[str]]:
    """Remove or deactivate ``user`` and revoke what they held; return what was revoked, by kind.

    Called inside the caller's unit of work, before its commit (which the caller does). Deactivating
    a user who already is deactivated changes nothing, records nothing, and returns empty lists."""
    now = utcnow()
    await uow.organizations.lock(user.organization_id)
    if user.removed_at is not None:
        raise NotFound(f"user {user.id!r} not found")
    memberships: list[str] = []
    if reason == "removed":
        if await uow.users.count(user.organization_id) == 1:
            raise InvalidRequest(
                f"user {user.id} is the organization's only member and cannot be removed",
                error_code="cannot_remove_last_member",
            )
        await ensure_not_last_admin(uow, user, "removed")
        user.removed_at = now
        memberships = [m.workspace_id for m in await uow.members.delete_for_user(user.id)]
    else:
        if user.deactivated_at is not None:
            return _result([], [], [], [], [])
        await ensure_not_last_admin(uow, user, "deactivated")
        user.deactivated_at = now

    sessions = await uow.user_sessions.revoke_for_user(user.id, now)
    tokens = await uow.user_tokens.revoke_for_user(user.id, now)

    admin_keys = await uow.admin_keys.active_for_user(user.id)
    for admin_key in admin_keys:
        admin_key.status, admin_key.revoked_at = "revoked", now
        uow.cache_events.changed("admin_api_key", admin_key.id, now)

    org = await uow.organizations.get(user.organization_id)
    policy = org.offboarding_key_policy if org is not None else DEFAULT_KEY_POLICY
    created = await uow.api_keys.active_created_by(user.organization_id, user.id)
    deactivated = created if policy == "deactivate" else []
    for key in deactivated:
        key.status = "inactive"
        uow.cache_events.changed("api_key", key.id, now)
    uow.cache_events.changed("user", user.id, now)  # whatever is cached of the user (their tokens' grants)

    details: dict[str, Any] = {
        "email": user.email,
        "reason": reason,
        "offboarding_key_policy": policy,
        "revoked_user_sessions": sessions,
        "revoked_user_tokens": tokens,
        "revoked_admin_api_keys": [k.id for k in admin_keys],
        "deactivated_api_keys": [k.id for k in deactivated],
        "kept_api_keys": [k.id for k in created] if policy == "keep" else [],
    }
    if reason == "removed":
        details["workspaces"] = memberships
    action = "user.remove" if reason == "removed" else "user.deactivate"
    audit.record(uow, ctx, action, "user", user.id, details=details)
    return _result(sessions, tokens, [k.id for k in admin_keys], [k.id for k in deactivated], memberships)


def _result(
    sessions: list[str], tokens: list[str], admin_keys: list[str], api_keys: list[str], workspaces: list[str]
) -> dict[str, list[str]]:
    return {
        "user_sessions": sessions,
        "user_tokens": tokens,
        "admin_api_keys": admin_keys,
        "api_keys": api_keys,
        "workspaces": workspaces,
    }


@dataclass(frozen=True, slots=True)
class Named:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Preview:
    """What ``offboard`` would revoke, with names for the people reading it."""

    reason: Reason
    key_policy: str
    user_sessions: list[str]
    user_tokens: list[str]
    admin_api_keys: list[Named]
    api_keys: list[Named]  # set to inactive (``offboarding_key_policy: deactivate``)
    workspaces: list[Named]  # memberships deleted (removal only)


async def preview(uows: UnitOfWorkFactory, ctx: Context, user_id: str, *, reason: Reason) -> Preview:
    """Run ``offboard`` for ``user_id`` and roll it back: what it would revoke right now (its refusals,
    the last admin's or the only member's, are raised as they would be)."""
    async with uows() as uow:
        user = await uow.users.get(ctx.organization_id, user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        org = await uow.organizations.get(ctx.organization_id)
        policy = org.offboarding_key_policy if org is not None else DEFAULT_KEY_POLICY
        done = await offboard(uow, ctx, user, reason=reason)
        admin_keys = [k for k in await uow.admin_keys.all(ctx.organization_id) if k.id in done["admin_api_keys"]]
        keys = [await uow.api_keys.get(ctx.organization_id, key_id) for key_id in done["api_keys"]]
        spaces = [await uow.workspaces.get(ctx.organization_id, ws) for ws in done["workspaces"]]
        # Leaving the block without a commit rolls back everything ``offboard`` did.
        return Preview(
            reason=reason,
            key_policy=policy,
            user_sessions=done["user_sessions"],
            user_tokens=done["user_tokens"],
            admin_api_keys=[Named(k.id, k.name) for k in admin_keys],
            api_keys=[Named(k.id, k.name) for k in keys if k is not None],
            workspaces=[Named(w.id, w.name) for w in spaces if w is not None],
        )
