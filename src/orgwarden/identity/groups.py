"""Group membership and the roles it grants, recomputed whenever a user's groups change.

``recompute`` writes a user's effective roles (``domain.group_roles``: the highest of the direct role
and every group's) into ``users.role`` and ``workspace_members``; ``apply_claim`` is what sign-in calls
with the OpenID Connect groups claim. Both run inside the caller's unit of work, before its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from orgwarden.domain.clock import utcnow
from orgwarden.domain.group_roles import ORG_SCOPE, Managed, resolve
from orgwarden.domain.policy import Actor
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.storage.tables import ManagedRole, RbacGroupMember, User, WorkspaceMember
from orgwarden.storage.uow import UnitOfWork

MAX_CLAIM_GROUPS = 1000  # names beyond this many in one claim are ignored
MAX_GROUP_NAME = 255


async def recompute(uow: UnitOfWork, user: User, now: datetime) -> dict[str, list[str | None]]:
    """Bring ``user``'s org role and workspace memberships in line with their groups.

    Returns the changes, ``{scope: [before, after]}`` (``None``: no membership), for the audit event;
    a change also tells every instance's caches that the user changed (``cache_events``)."""
    groups = [group for _, group in await uow.rbac_groups.groups_of(user.id)]
    granted: dict[str, list[str]] = {ORG_SCOPE: [g.org_role for g in groups if g.org_role]}
    for grant in await uow.rbac_groups.workspace_roles([g.id for g in groups]):
        workspace = await uow.workspaces.get(user.organization_id, grant.workspace_id)
        if workspace is not None and workspace.archived_at is None:
            granted.setdefault(grant.workspace_id, []).append(grant.role)
    managed = await uow.managed_roles.of_user(user.id)
    changes: dict[str, list[str | None]] = {}
    for scope in sorted(set(granted) | set(managed)):
        row = managed.get(scope)
        kept = Managed(row.direct_role, row.managed_role) if row is not None else None
        member = None if scope == ORG_SCOPE else await uow.members.get(scope, user.id)
        stored = user.role if scope == ORG_SCOPE else (member.role if member is not None else None)
        outcome = resolve(scope, stored, kept, granted.get(scope, []))
        if outcome.role != stored:
            changes[scope] = [stored, outcome.role]
            if scope == ORG_SCOPE:
                assert outcome.role is not None  # an org role always has a direct part
                user.role = outcome.role
            elif outcome.role is None:
                assert member is not None
                await uow.members.delete(member)
            elif member is None:
                uow.members.add(WorkspaceMember(workspace_id=scope, user_id=user.id, role=outcome.role, created_at=now))
            else:
                member.role = outcome.role
        if outcome.managed is None:
            if row is not None:
                await uow.managed_roles.delete(row)
        elif row is None:
            uow.managed_roles.add(
                ManagedRole(
                    user_id=user.id,
                    scope=scope,
                    direct_role=outcome.managed.direct_role,
                    managed_role=outcome.managed.managed_role,
                )
            )
        else:
            row.direct_role, row.managed_role = outcome.managed.direct_role, outcome.managed.managed_role
    if changes:
        uow.cache_events.changed("user", user.id, now)
    # Their groups may have changed: the Claude Code policy they get (``services.cc_policies``).
    uow.cache_events.changed("user_groups", user.id, now)
    return changes


async def join_invite_groups(uow: UnitOfWork, invite_id: str, user: User, now: datetime) -> dict[str, Any]:
    """Put a user who just accepted an invite in the invite's groups (``rbac_group_ids``) and
    recompute their roles; what to add to the acceptance's audit event. Any path that accepts an
    invite calls this, in its unit of work."""
    await uow.flush()  # the new user's row before the rows that reference it
    group_ids = (await uow.rbac_groups.for_invites([invite_id])).get(invite_id, [])
    for group_id in group_ids:
        uow.rbac_groups.add(RbacGroupMember(group_id=group_id, user_id=user.id, source="direct", created_at=now))
    if not group_ids:
        return {}
    await uow.flush()
    return {"rbac_group_ids": group_ids, "roles": await recompute(uow, user, now)}


async def apply_claim(uow: UnitOfWork, user: User, group_names: Sequence[str]) -> None:
    """Make ``user``'s sign-in groups those named in the OpenID Connect groups claim, then recompute
    their roles. Only groups that exist in orgwarden count (created by SCIM, the Admin API or the
    CLI; unknown names are ignored, so a claim cannot create groups). Memberships that SCIM or an
    admin made are left alone; only those an earlier claim made (``source = "oidc"``) are removed.
    Records one audit event when anything changed. Runs in the caller's unit of work."""
    await uow.flush()  # a user created in this unit of work is written before its memberships
    wanted = sorted({n for n in group_names[:MAX_CLAIM_GROUPS] if isinstance(n, str) and 0 < len(n) <= MAX_GROUP_NAME})
    now = utcnow()
    matched = {g.id: g for g in await uow.rbac_groups.find(user.organization_id, names=wanted)} if wanted else {}
    current = {member.group_id: member for member, _ in await uow.rbac_groups.groups_of(user.id)}
    added = [gid for gid in sorted(matched) if gid not in current]
    removed = [gid for gid, m in sorted(current.items()) if m.source == "oidc" and gid not in matched]
    for gid in added:
        uow.rbac_groups.add(RbacGroupMember(group_id=gid, user_id=user.id, source="oidc", created_at=now))
    for gid in removed:
        await uow.rbac_groups.remove_member(current[gid])
    if added or removed:
        await uow.flush()
    roles = await recompute(uow, user, now)
    if added or removed or roles:
        ctx = Context(Actor("system", "oidc_groups_claim", user.organization_id, user.id))
        details: dict[str, Any] = {"added_to": added, "removed_from": removed, "roles": roles}
        audit.record(uow, ctx, "user.groups_sync", "user", user.id, details=details)
