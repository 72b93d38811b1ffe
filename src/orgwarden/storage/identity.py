"""Repositories of signed-in people: OAuth tokens, browser sessions and device authorizations.

Every revocation here also writes a cache event in the same transaction (``user_token``/``user_session``
with the row's id, or ``user`` with the user's id when all of a user's rows go), so caches of presented
tokens on every instance drop them within the cache-event poll.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.storage.tables import (
    CacheEvent,
    DeviceAuthorization,
    User,
    UserSession,
    UserToken,
    UserTokenFamily,
    Workspace,
    WorkspaceMember,
)


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _changed(self, entity_type: str, entity_id: str, now: datetime) -> None:
        self.session.add(CacheEvent(entity_type=entity_type, entity_id=entity_id, created_at=now))


class UserTokens(_Repo):
    def add(self, row: UserToken) -> None:
        self.session.add(row)

    async def with_user_by_hash(self, secret_hash: str, *, lock: bool = False) -> tuple[UserToken, User] | None:
        """The token with this hash and its user (removed or deactivated ones included: callers decide)."""
        stmt = (
            select(UserToken, User).join(User, User.id == UserToken.user_id).where(UserToken.secret_hash == secret_hash)
        )
        if lock:  # serializes two refreshes of one token (PostgreSQL; SQLite serializes writers anyway)
            stmt = stmt.with_for_update(of=UserToken).execution_options(populate_existing=True)
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    async def revoke(self, token: UserToken, now: datetime) -> None:
        if token.revoked_at is None:
            token.revoked_at = now
            self._changed("user_token", token.id, now)

    async def revoke_family(self, family_id: str, now: datetime) -> list[str]:
        """Revoke every live token (access and refresh) issued from one grant; the ids revoked."""
        ids = list(
            (
                await self.session.scalars(
                    select(UserToken.id).where(UserToken.family_id == family_id, UserToken.revoked_at.is_(None))
                )
            ).all()
        )
        if ids:
            await self.session.execute(update(UserToken).where(UserToken.id.in_(ids)).values(revoked_at=now))
            for token_id in ids:
                self._changed("user_token", token_id, now)
        await self.session.execute(  # a revoked sign-in keeps no identity provider token
            update(UserTokenFamily).where(UserTokenFamily.id == family_id).values(idp_refresh_token=None)
        )
        return ids

    async def revoke_for_user(self, user_id: str, now: datetime) -> list[str]:
        """Revoke every live token of a user (offboarding); the ids revoked."""
        ids = list(
            (
                await self.session.scalars(
                    select(UserToken.id).where(UserToken.user_id == user_id, UserToken.revoked_at.is_(None))
                )
            ).all()
        )
        if ids:
            await self.session.execute(update(UserToken).where(UserToken.id.in_(ids)).values(revoked_at=now))
            self._changed("user", user_id, now)
        await self.session.execute(
            update(UserTokenFamily).where(UserTokenFamily.user_id == user_id).values(idp_refresh_token=None)
        )
        return ids

    async def for_user(self, user_id: str) -> list[UserToken]:
        stmt = select(UserToken).where(UserToken.user_id == user_id).order_by(UserToken.id)
        return list((await self.session.scalars(stmt)).all())

    def add_family(self, row: UserTokenFamily) -> None:
        self.session.add(row)

    async def family(self, family_id: str) -> UserTokenFamily | None:
        return await self.session.get(UserTokenFamily, family_id, populate_existing=True)


class UserSessions(_Repo):
    def add(self, row: UserSession) -> None:
        self.session.add(row)

    async def get(self, session_id: str) -> UserSession | None:
        return await self.session.get(UserSession, session_id)

    async def with_user_by_hash(self, secret_hash: str) -> tuple[UserSession, User] | None:
        stmt = select(UserSession, User).join(User, User.id == UserSession.user_id)
        row = (await self.session.execute(stmt.where(UserSession.secret_hash == secret_hash))).first()
        return (row[0], row[1]) if row else None

    async def revoke(self, row: UserSession, now: datetime) -> None:
        row.idp_refresh_token = None
        if row.revoked_at is None:
            row.revoked_at = now
            self._changed("user_session", row.id, now)

    async def revoke_for_user(self, user_id: str, now: datetime) -> list[str]:
        """Revoke every live session of a user (offboarding); the ids revoked."""
        ids = list(
            (
                await self.session.scalars(
                    select(UserSession.id).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
                )
            ).all()
        )
        if ids:
            await self.session.execute(update(UserSession).where(UserSession.id.in_(ids)).values(revoked_at=now))
            self._changed("user", user_id, now)
        await self.session.execute(
            update(UserSession).where(UserSession.user_id == user_id).values(idp_refresh_token=None)
        )
        return ids


class DeviceAuthorizations(_Repo):
    def add(self, row: DeviceAuthorization) -> None:
        self.session.add(row)

    async def by_device_code_hash(self, code_hash: str, *, lock: bool = False) -> DeviceAuthorization | None:
        stmt = select(DeviceAuthorization).where(DeviceAuthorization.device_code_hash == code_hash)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def by_user_code(self, user_code: str, *, lock: bool = False) -> DeviceAuthorization | None:
        stmt = select(DeviceAuthorization).where(DeviceAuthorization.user_code == user_code)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def count_pending(self, now: datetime) -> int:
        """Unexpired authorizations nobody has approved or denied yet."""
        from sqlalchemy import func

        stmt = select(func.count()).where(DeviceAuthorization.status == "pending", DeviceAuthorization.expires_at > now)
        return int(await self.session.scalar(stmt) or 0)

    async def delete_expired(self, before: datetime) -> None:
        """Expired rows are kept for a while (``expired_token`` answers) and then removed by this."""
        from sqlalchemy import delete

        await self.session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < before))


class UserWorkspaces(_Repo):
    """The workspaces a user belongs to, with their membership, oldest workspace first (not archived)."""

    async def of_user(self, user_id: str) -> list[tuple[WorkspaceMember, Workspace]]:
        stmt = (
            select(WorkspaceMember, Workspace)
            .join(Workspace, Workspace.id == WorkspaceMember.workspace_id)
            .where(WorkspaceMember.user_id == user_id, Workspace.archived_at.is_(None))
            .order_by(Workspace.id)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(stmt)).all()]
