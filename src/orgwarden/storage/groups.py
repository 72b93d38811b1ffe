"""Repositories of SCIM and groups: SCIM tokens, SCIM users, RBAC groups, their members and roles,
the roles groups raised (``managed_roles``), and invites' groups. They never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.storage.pagination import Cursor, Page, paginate
from orgwarden.storage.tables import (
    InviteRbacGroup,
    ManagedRole,
    RbacGroup,
    RbacGroupMember,
    RbacGroupWorkspaceRole,
    ScimToken,
    ScimUser,
    User,
)


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: object) -> None:
        self.session.add(row)


class ScimTokens(_Repo):
    async def get(self, organization_id: str, token_id: str) -> ScimToken | None:
        return await self.session.scalar(
            select(ScimToken).where(ScimToken.organization_id == organization_id, ScimToken.id == token_id)
        )

    async def by_secret_hash(self, secret_hash: str) -> ScimToken | None:
        return await self.session.scalar(select(ScimToken).where(ScimToken.secret_hash == secret_hash))

    async def all(self, organization_id: str) -> list[ScimToken]:
        stmt = select(ScimToken).where(ScimToken.organization_id == organization_id).order_by(ScimToken.id)
        return list((await self.session.scalars(stmt)).all())


class ScimUsers(_Repo):
    """SCIM users joined to their orgwarden user (only users not removed)."""

    def _joined(self, organization_id: str) -> Select[ScimUser, User]:
        return (
            select(ScimUser, User)
            .join(User, User.id == ScimUser.user_id)
            .where(ScimUser.organization_id == organization_id, User.removed_at.is_(None))
        )

    async def get(self, organization_id: str, user_id: str, *, lock: bool = False) -> tuple[ScimUser, User] | None:
        stmt = self._joined(organization_id).where(ScimUser.user_id == user_id)
        if lock:
            stmt = stmt.with_for_update(of=ScimUser).execution_options(populate_existing=True)
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    async def by_user_name(self, organization_id: str, user_name_key: str) -> ScimUser | None:
        return await self.session.scalar(
            select(ScimUser).where(ScimUser.organization_id == organization_id, ScimUser.user_name_key == user_name_key)
        )

    async def find(
        self,
        organization_id: str,
        *,
        user_name_key: str | None = None,
        external_id: str | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> list[tuple[ScimUser, User]]:
        """Every matching SCIM user, in creation order (a narrowing for the SCIM filter)."""
        stmt = self._joined(organization_id)
        if user_name_key is not None:
            stmt = stmt.where(ScimUser.user_name_key == user_name_key)
        if external_id is not None:
            stmt = stmt.where(ScimUser.external_id == external_id)
        if user_ids is not None:
            stmt = stmt.where(ScimUser.user_id.in_(list(user_ids)))
        rows = (await self.session.execute(stmt.order_by(ScimUser.user_id))).all()
        return [(row[0], row[1]) for row in rows]

    async def delete(self, row: ScimUser) -> None:
        await self.session.delete(row)


class RbacGroups(_Repo):
    async def get(self, organization_id: str, group_id: str, *, lock: bool = False) -> RbacGroup | None:
        stmt = select(RbacGroup).where(RbacGroup.organization_id == organization_id, RbacGroup.id == group_id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def find(
        self,
        organization_id: str,
        *,
        name: str | None = None,
        external_id: str | None = None,
        names: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[RbacGroup]:
        stmt = select(RbacGroup).where(RbacGroup.organization_id == organization_id)
        if name is not None:
            stmt = stmt.where(RbacGroup.name == name)
        if external_id is not None:
            stmt = stmt.where(RbacGroup.external_id == external_id)
        if names is not None:
            stmt = stmt.where(RbacGroup.name.in_(list(names)))
        if ids is not None:
            stmt = stmt.where(RbacGroup.id.in_(list(ids)))
        return list((await self.session.scalars(stmt.order_by(RbacGroup.id))).all())

    async def page(self, organization_id: str, cursor: Cursor) -> Page[RbacGroup]:
        return await paginate(
            self.session, select(RbacGroup).where(RbacGroup.organization_id == organization_id), RbacGroup.id, cursor
        )

    async def delete(self, row: RbacGroup) -> None:
        await self.session.execute(delete(RbacGroupMember).where(RbacGroupMember.group_id == row.id))
        await self.session.execute(delete(RbacGroupWorkspaceRole).where(RbacGroupWorkspaceRole.group_id == row.id))
        await self.session.execute(delete(InviteRbacGroup).where(InviteRbacGroup.group_id == row.id))
        await self.session.delete(row)

    # Members

    async def member_ids(self, group_id: str) -> list[str]:
        """The group's members who are still users of the organization, in id order."""
        return [m.user_id for m in await self.members(group_id)]

    async def members(self, group_id: str) -> list[RbacGroupMember]:
        stmt = (
            select(RbacGroupMember)
            .join(User, User.id == RbacGroupMember.user_id)
            .where(RbacGroupMember.group_id == group_id, User.removed_at.is_(None))
            .order_by(RbacGroupMember.user_id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def members_page(self, group_id: str, cursor: Cursor) -> Page[tuple[RbacGroupMember, User]]:
        stmt = (
            select(RbacGroupMember)
            .join(User, User.id == RbacGroupMember.user_id)
            .where(RbacGroupMember.group_id == group_id, User.removed_at.is_(None))
        )
        page: Page[RbacGroupMember] = await paginate(self.session, stmt, RbacGroupMember.user_id, cursor)
        users = {
            u.id: u
            for u in (
                await self.session.scalars(select(User).where(User.id.in_([m.user_id for m in page.items])))
            ).all()
        }
        return Page([(m, users[m.user_id]) for m in page.items], page.has_more)

    async def member(self, group_id: str, user_id: str) -> RbacGroupMember | None:
        return await self.session.get(RbacGroupMember, (group_id, user_id))

    async def remove_member(self, row: RbacGroupMember) -> None:
        await self.session.delete(row)

    async def groups_of(self, user_id: str) -> list[tuple[RbacGroupMember, RbacGroup]]:
        stmt = (
            select(RbacGroupMember, RbacGroup)
            .join(RbacGroup, RbacGroup.id == RbacGroupMember.group_id)
            .where(RbacGroupMember.user_id == user_id)
            .order_by(RbacGroup.id)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(stmt)).all()]

    async def groups_of_many(self, user_ids: Sequence[str]) -> dict[str, list[RbacGroup]]:
        if not user_ids:
            return {}
        stmt = (
            select(RbacGroupMember.user_id, RbacGroup)
            .join(RbacGroup, RbacGroup.id == RbacGroupMember.group_id)
            .where(RbacGroupMember.user_id.in_(list(user_ids)))
            .order_by(RbacGroup.id)
        )
        found: dict[str, list[RbacGroup]] = {}
        for user_id, group in (await self.session.execute(stmt)).all():
            found.setdefault(user_id, []).append(group)
        return found

    async def remove_user_everywhere(self, user_id: str) -> list[str]:
        rows = [m for m, _ in await self.groups_of(user_id)]
        for row in rows:
            await self.session.delete(row)
        return [r.group_id for r in rows]

    # Workspace roles

    async def workspace_roles(self, group_ids: Sequence[str]) -> list[RbacGroupWorkspaceRole]:
        if not group_ids:
            return []
        stmt = select(RbacGroupWorkspaceRole).where(RbacGroupWorkspaceRole.group_id.in_(list(group_ids)))
        return list((await self.session.scalars(stmt.order_by(RbacGroupWorkspaceRole.workspace_id))).all())

    async def set_workspace_roles(self, group_id: str, roles: dict[str, str]) -> None:
        await self.session.execute(delete(RbacGroupWorkspaceRole).where(RbacGroupWorkspaceRole.group_id == group_id))
        await self.session.flush()
        for workspace_id, role in sorted(roles.items()):
            self.session.add(RbacGroupWorkspaceRole(group_id=group_id, workspace_id=workspace_id, role=role))

    async def count(self, organization_id: str) -> int:
        stmt = select(func.count()).select_from(RbacGroup).where(RbacGroup.organization_id == organization_id)
        return int(await self.session.scalar(stmt) or 0)

    # Invites

    async def for_invites(self, invite_ids: Sequence[str]) -> dict[str, list[str]]:
        if not invite_ids:
            return {}
        stmt = select(InviteRbacGroup).where(InviteRbacGroup.invite_id.in_(list(invite_ids)))
        found: dict[str, list[str]] = {}
        for row in (await self.session.scalars(stmt.order_by(InviteRbacGroup.group_id))).all():
            found.setdefault(row.invite_id, []).append(row.group_id)
        return found


class ManagedRoles(_Repo):
    async def of_user(self, user_id: str) -> dict[str, ManagedRole]:
        stmt = select(ManagedRole).where(ManagedRole.user_id == user_id)
        return {row.scope: row for row in (await self.session.scalars(stmt)).all()}

    async def delete(self, row: ManagedRole) -> None:
        await self.session.delete(row)


def touch(row: ScimUser | RbacGroup, now: datetime) -> None:
    """A change to a SCIM resource: a new version (its ETag) and ``lastModified``."""
    row.version += 1
    row.updated_at = now
