"""Workspace members: add, read, list, change role, remove.

An organization admin is implicitly an admin of every workspace (``domain.roles``) and need not be
listed; listing shows explicit memberships only. New members cannot get ``workspace_billing`` (the
spec); an existing one can be moved to it.
"""

from __future__ import annotations

from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission
from orgwarden.domain.roles import ADDABLE_WORKSPACE_ROLES, WORKSPACE_ROLES
from orgwarden.errors import Conflict, NotFound
from orgwarden.services import audit
from orgwarden.services.access import workspace_access
from orgwarden.services.context import Context
from orgwarden.services.users import require_user
from orgwarden.services.validation import one_of
from orgwarden.services.workspaces import require_active, require_workspace
from orgwarden.storage.pagination import Cursor, Page
from orgwarden.storage.tables import WorkspaceMember
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory


async def _require_member(uow: UnitOfWork, workspace_id: str, user_id: str) -> WorkspaceMember:
    member = await uow.members.get(workspace_id, user_id)
    if member is None:
        raise NotFound(f"user {user_id!r} is not a member of workspace {workspace_id}")
    return member


class MemberService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def add(self, ctx: Context, workspace_id: str, *, user_id: str, role: str) -> WorkspaceMember:
        one_of(role, ADDABLE_WORKSPACE_ROLES, "workspace_role", refused="workspace_billing")
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.MEMBERS_WRITE)
            require_active(workspace)
            await require_user(uow, ctx.organization_id, user_id)
            if await uow.members.get(workspace_id, user_id) is not None:
                raise Conflict(f"user {user_id} is already a member of workspace {workspace_id}")
            member = WorkspaceMember(workspace_id=workspace_id, user_id=user_id, role=role, created_at=utcnow())
            uow.members.add(member)
            uow.cache_events.changed("user", user_id, member.created_at)  # their access tokens' grants
            audit.record(
                uow, ctx, "workspace_member.add", "user", user_id, workspace_id=workspace_id,
                details={"workspace_role": role},
            )  # fmt: skip
            await uow.commit()
            return member

    async def get(self, ctx: Context, workspace_id: str, user_id: str) -> WorkspaceMember:
        async with self._uow() as uow:
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.MEMBERS_READ)
            return await _require_member(uow, workspace_id, user_id)

    async def list(self, ctx: Context, workspace_id: str, cursor: Cursor) -> Page[WorkspaceMember]:
        async with self._uow() as uow:
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.MEMBERS_READ)
            return await uow.members.page(workspace_id, cursor)

    async def update(self, ctx: Context, workspace_id: str, user_id: str, *, role: str) -> WorkspaceMember:
        one_of(role, WORKSPACE_ROLES, "workspace_role")
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.MEMBERS_WRITE)
            require_active(workspace)
            member = await _require_member(uow, workspace_id, user_id)
            if member.role != role:
                before, member.role = member.role, role
                uow.cache_events.changed("user", user_id, utcnow())  # their access tokens' grants
                audit.record(
                    uow, ctx, "workspace_member.update", "user", user_id, workspace_id=workspace_id,
                    details={"workspace_role": [before, role]},
                )  # fmt: skip
            await uow.commit()
            return member

    async def remove(self, ctx: Context, workspace_id: str, user_id: str) -> None:
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.MEMBERS_WRITE)
            member = await _require_member(uow, workspace_id, user_id)
            await uow.members.delete(member)
            uow.cache_events.changed("user", user_id, utcnow())  # their access tokens' grants
            audit.record(
                uow, ctx, "workspace_member.remove", "user", user_id, workspace_id=workspace_id,
                details={"workspace_role": member.role},
            )  # fmt: skip
            await uow.commit()
