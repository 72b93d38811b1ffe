"""RBAC groups and roles (the SDK's ``beta.organization.rbac_groups`` / ``rbac_roles``) and the
roles a group grants.

A group grants at most one organization role and one role per workspace; a member's role is the
highest of their direct role and their groups' (``domain.group_roles``), recomputed whenever a
membership or a group's roles change. Roles are identified as on Anthropic's API by ``rbac_role``
ids; orgwarden's are built in, one per organization role (``rbacrole_developer``) and one per
workspace role and workspace (``rbacrole_workspace_developer__wrkspc_...``). As in the SDK, a group's
``role_ids`` are read-only on the Admin API: they are set with ``orgwarden groups set-roles``.
Groups provisioned by SCIM (``source_type: "scim"``) are the identity provider's: the Admin API may
not rename, delete or change their members (SCIM does), but their roles are set here.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import utcnow
from orgwarden.domain.group_roles import GROUP_ORG_ROLES, GROUP_WORKSPACE_ROLES
from orgwarden.domain.roles import ORG_ROLES
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.identity import groups as group_roles
from orgwarden.services import audit, cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.services.validation import checked
from orgwarden.storage.pagination import Cursor
from orgwarden.storage.tables import RbacGroup, RbacGroupMember, User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

GROUP_ID = "rbacgrp"
ROLE_PREFIX = "rbacrole_"
_DISPLAY = {
    "user": "User",
    "claude_code_user": "Claude Code user",
    "developer": "Developer",
    "billing": "Billing",
    "admin": "Admin",
    "workspace_user": "Workspace user",
    "workspace_restricted_developer": "Workspace restricted developer",
    "workspace_developer": "Workspace developer",
    "workspace_admin": "Workspace admin",
}


@dataclass(frozen=True, slots=True)
class Role:
    id: str
    display_name: str
    role: str
    workspace_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GroupView:
    group: RbacGroup
    role_ids: list[str]


def role_id(role: str, workspace_id: str | None = None) -> str:
    return f"{ROLE_PREFIX}{role}" if workspace_id is None else f"{ROLE_PREFIX}{role}__{workspace_id}"


def parse_role_id(value: str) -> tuple[str, str | None]:
    """``(role, workspace_id)`` named by a role id; 404 for one orgwarden does not know."""
    body = value.removeprefix(ROLE_PREFIX)
    role, _, workspace_id = body.partition("__")
    if (
        body == value
        or (workspace_id and role not in GROUP_WORKSPACE_ROLES)
        or (not workspace_id and role not in ORG_ROLES)
    ):
        raise NotFound(f"RBAC role {value!r} not found")
    return role, workspace_id or None


def not_found(group_id: str) -> NotFound:
    return NotFound(f"RBAC group {group_id!r} not found", error_code="rbac_group_not_found")


async def require_group(uow: UnitOfWork, organization_id: str, group_id: str, *, lock: bool = False) -> RbacGroup:
    group = await uow.rbac_groups.get(organization_id, group_id, lock=lock)
    if group is None:
        raise not_found(group_id)
    return group


async def _role_ids(uow: UnitOfWork, group: RbacGroup) -> list[str]:
    found = [role_id(group.org_role)] if group.org_role else []
    found += [role_id(r.role, r.workspace_id) for r in await uow.rbac_groups.workspace_roles([group.id])]
    return found


def _refuse_scim(group: RbacGroup, what: str) -> None:
    if group.source_type == "scim":
        raise InvalidRequest(
            f"RBAC group {group.id} is provisioned by the identity provider (SCIM); {what} it there",
            error_code="rbac_group_managed_by_scim",
        )


async def recompute_members(
    uow: UnitOfWork, organization_id: str, user_ids: Sequence[str], now: datetime
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for uid in user_ids:
        user = await uow.users.get(organization_id, uid)
        if user is not None and (changed := await group_roles.recompute(uow, user, now)):
            changes[uid] = changed
    return changes


class RbacGroupService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def create(self, ctx: Context, *, name: str) -> GroupView:
        clean = checked(rules.check_name, name)
        now = utcnow()
        async with self._uow() as uow:
            group = RbacGroup(
                id=ids.new_id(GROUP_ID),
                organization_id=ctx.organization_id,
                name=clean,
                source_type="direct",
                external_id=None,
                org_role=None,
                version=1,
                created_at=now,
                updated_at=now,
            )
            uow.rbac_groups.add(group)
            audit.record(uow, ctx, "rbac_group.create", "rbac_group", group.id, details={"name": clean})
            await uow.commit()
            return GroupView(group, [])

    async def get(self, ctx: Context, group_id: str) -> GroupView:
        async with self._uow() as uow:
            group = await require_group(uow, ctx.organization_id, group_id)
            return GroupView(group, await _role_ids(uow, group))

    async def list(self, ctx: Context, *, limit: int, page: str | None) -> CursorPage[GroupView]:
        after = cursors.decode(page)
        async with self._uow() as uow:
            result = await uow.rbac_groups.page(ctx.organization_id, Cursor(after_id=after, limit=limit))
            views = [GroupView(g, await _role_ids(uow, g)) for g in result.items]
        next_page = cursors.encode(views[-1].group.id) if result.has_more and views else None
        return CursorPage(views, next_page)

    async def rename(self, ctx: Context, group_id: str, *, name: str | None) -> GroupView:
        async with self._uow() as uow:
            group = await require_group(uow, ctx.organization_id, group_id, lock=True)
            if name is not None:
                _refuse_scim(group, "rename")
                clean = checked(rules.check_name, name)
                if clean != group.name:
                    before, group.name = group.name, clean
                    group.version += 1
                    group.updated_at = utcnow()
                    audit.record(
                        uow, ctx, "rbac_group.update", "rbac_group", group.id, details={"name": [before, clean]}
                    )
            await uow.commit()
            return GroupView(group, await _role_ids(uow, group))

    async def delete(self, ctx: Context, group_id: str) -> str:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await require_group(uow, ctx.organization_id, group_id, lock=True)
            _refuse_scim(group, "delete")
            members = await uow.rbac_groups.member_ids(group.id)
            await uow.rbac_groups.delete(group)
            await uow.flush()
            roles = await recompute_members(uow, ctx.organization_id, members, now)
            audit.record(
                uow, ctx, "rbac_group.delete", "rbac_group", group_id,
                details={"name": group.name, "members": members, "roles": roles},
            )  # fmt: skip
            await uow.commit()
            return group_id

    # Members

    async def members(
        self, ctx: Context, group_id: str, *, limit: int, page: str | None
    ) -> CursorPage[tuple[RbacGroupMember, User]]:
        after = cursors.decode(page)
        async with self._uow() as uow:
            await require_group(uow, ctx.organization_id, group_id)
            result = await uow.rbac_groups.members_page(group_id, Cursor(after_id=after, limit=limit))
        items = list(result.items)
        next_page = cursors.encode(items[-1][0].user_id) if result.has_more and items else None
        return CursorPage(items, next_page)

    async def add_member(self, ctx: Context, group_id: str, user_id: str) -> tuple[RbacGroupMember, User]:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await require_group(uow, ctx.organization_id, group_id, lock=True)
            _refuse_scim(group, "change its members")
            user = await uow.users.get(ctx.organization_id, user_id)
            if user is None:
                raise NotFound(f"user {user_id!r} not found")
            member = await uow.rbac_groups.member(group.id, user.id)
            if member is None:
                member = RbacGroupMember(group_id=group.id, user_id=user.id, source="direct", created_at=now)
                uow.rbac_groups.add(member)
                await uow.flush()
                roles = await group_roles.recompute(uow, user, now)
                group.version += 1
                group.updated_at = now
                audit.record(
                    uow, ctx, "rbac_group.member_add", "rbac_group", group.id,
                    details={"user_id": user.id, "roles": roles},
                )  # fmt: skip
            await uow.commit()
            return member, user

    async def remove_member(self, ctx: Context, group_id: str, user_id: str) -> None:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await require_group(uow, ctx.organization_id, group_id, lock=True)
            _refuse_scim(group, "change its members")
            member = await uow.rbac_groups.member(group.id, user_id)
            user = await uow.users.get(ctx.organization_id, user_id)
            if member is None or user is None:
                raise NotFound(f"user {user_id!r} is not a member of RBAC group {group_id}")
            await uow.rbac_groups.remove_member(member)
            await uow.flush()
            roles = await group_roles.recompute(uow, user, now)
            group.version += 1
            group.updated_at = now
            audit.record(
                uow, ctx, "rbac_group.member_remove", "rbac_group", group.id,
                details={"user_id": user_id, "roles": roles},
            )  # fmt: skip
            await uow.commit()

    # Roles

    async def set_roles(
        self, ctx: Context, group_id: str, *, org_role: str | None, workspace_roles: dict[str, str]
    ) -> GroupView:
        """Replace what the group grants; every member's roles are recomputed in the same transaction."""
        if org_role is not None and org_role not in GROUP_ORG_ROLES:
            allowed = ", ".join(sorted(GROUP_ORG_ROLES))
            raise InvalidRequest(f"org role: {org_role!r} is not one a group can grant ({allowed}; never admin)")
        for workspace_id, role in workspace_roles.items():
            if role not in GROUP_WORKSPACE_ROLES:
                allowed = ", ".join(sorted(GROUP_WORKSPACE_ROLES))
                raise InvalidRequest(f"workspace role for {workspace_id}: {role!r} is not one of {allowed}")
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await require_group(uow, ctx.organization_id, group_id, lock=True)
            for workspace_id in workspace_roles:
                workspace = await uow.workspaces.get(ctx.organization_id, workspace_id)
                if workspace is None or workspace.archived_at is not None:
                    raise NotFound(f"workspace {workspace_id!r} not found (or archived)")
            before = await _role_ids(uow, group)
            group.org_role = org_role
            await uow.rbac_groups.set_workspace_roles(group.id, workspace_roles)
            await uow.flush()
            members = await uow.rbac_groups.member_ids(group.id)
            roles = await recompute_members(uow, ctx.organization_id, members, now)
            after = await _role_ids(uow, group)
            group.updated_at = now
            audit.record(
                uow, ctx, "rbac_group.set_roles", "rbac_group", group.id,
                details={"role_ids": [before, after], "members": roles},
            )  # fmt: skip
            await uow.commit()
            return GroupView(group, after)

    async def roles(self, ctx: Context) -> Sequence[Role]:
        """Every role a group may hold: the organization roles, and each live workspace's roles."""
        async with self._uow() as uow:
            org = await uow.organizations.get(ctx.organization_id)
            assert org is not None
            found: builtins.list[Role] = [
                Role(role_id(r), _DISPLAY[r], r, None, org.created_at) for r in sorted(ORG_ROLES)
            ]
            cursor = Cursor(limit=1000)
            while True:
                page = await uow.workspaces.page(
                    ctx.organization_id, cursor, include_archived=False, include_default=True, ids=()
                )
                for ws in page.items:
                    found += [
                        Role(role_id(r, ws.id), f"{_DISPLAY[r]} ({ws.name})", r, ws.id, ws.created_at)
                        for r in sorted(GROUP_WORKSPACE_ROLES)
                    ]
                if not page.has_more or not page.items:
                    return found
                cursor = Cursor(after_id=page.items[-1].id, limit=1000)

    async def list_roles(self, ctx: Context, *, limit: int, page: str | None) -> CursorPage[Role]:
        found = await self.roles(ctx)
        return cursors.window(found, lambda r: r.id, [r.id for r in found], cursors.decode(page), limit)

    async def role(self, ctx: Context, rbac_role_id: str) -> Role:
        parse_role_id(rbac_role_id)
        for role in await self.roles(ctx):
            if role.id == rbac_role_id:
                return role
        raise NotFound(f"RBAC role {rbac_role_id!r} not found")
