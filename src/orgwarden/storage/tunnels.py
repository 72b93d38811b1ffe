"""The tunnel repositories: tunnels and their certificates, over one session.

Lists are newest first (ids are time-ordered, so descending id is descending creation time) and page
with the last id seen. ``get(..., lock=True)`` takes the tunnel's row lock on PostgreSQL (``SELECT ...
FOR UPDATE``), which is what serializes certificate creates, rotations and archives of one tunnel
across instances; SQLite already serializes writers (``BEGIN IMMEDIATE``, ``storage.engine``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.storage.tables import Tunnel, TunnelCertificate


class Tunnels:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: Tunnel) -> None:
        self.session.add(row)

    async def get(self, organization_id: str, tunnel_id: str, *, lock: bool = False) -> Tunnel | None:
        stmt = select(Tunnel).where(Tunnel.organization_id == organization_id, Tunnel.id == tunnel_id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def live_in_workspace(self, workspace_id: str) -> list[Tunnel]:
        """The workspace's tunnels not archived yet, oldest first, row-locked (``get``'s lock)."""
        stmt = (
            select(Tunnel)
            .where(Tunnel.workspace_id == workspace_id, Tunnel.archived_at.is_(None))
            .order_by(Tunnel.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list((await self.session.scalars(stmt)).all())

    async def by_token_hash(self, token_hash: str) -> Tunnel | None:
        return await self.session.scalar(select(Tunnel).where(Tunnel.token_hash == token_hash))

    async def domain_taken(self, domain: str) -> bool:
        return await self.session.scalar(select(Tunnel.id).where(Tunnel.domain == domain)) is not None

    async def before(
        self,
        organization_id: str,
        before_id: str | None,
        limit: int,
        *,
        workspace_id: str | None,
        include_archived: bool,
    ) -> list[Tunnel]:
        """Up to ``limit`` tunnels older than ``before_id``, newest first."""
        stmt = select(Tunnel).where(Tunnel.organization_id == organization_id)
        if workspace_id is not None:
            stmt = stmt.where(Tunnel.workspace_id == workspace_id)
        if not include_archived:
            stmt = stmt.where(Tunnel.archived_at.is_(None))
        if before_id is not None:
            stmt = stmt.where(Tunnel.id < before_id)
        return list((await self.session.scalars(stmt.order_by(Tunnel.id.desc()).limit(limit))).all())


class TunnelCertificates:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: TunnelCertificate) -> None:
        self.session.add(row)

    async def get(self, tunnel_id: str, certificate_id: str) -> TunnelCertificate | None:
        return await self.session.scalar(
            select(TunnelCertificate).where(
                TunnelCertificate.tunnel_id == tunnel_id, TunnelCertificate.id == certificate_id
            )
        )

    async def active(self, tunnel_id: str) -> list[TunnelCertificate]:
        stmt = select(TunnelCertificate).where(
            TunnelCertificate.tunnel_id == tunnel_id, TunnelCertificate.archived_at.is_(None)
        )
        return list((await self.session.scalars(stmt.order_by(TunnelCertificate.id))).all())

    async def count_active(self, tunnel_id: str) -> int:
        stmt = select(func.count()).where(
            TunnelCertificate.tunnel_id == tunnel_id, TunnelCertificate.archived_at.is_(None)
        )
        return int(await self.session.scalar(stmt) or 0)

    async def before(
        self, tunnel_id: str, before_id: str | None, limit: int, *, include_archived: bool
    ) -> list[TunnelCertificate]:
        """Up to ``limit`` certificates older than ``before_id``, newest first."""
        stmt = select(TunnelCertificate).where(TunnelCertificate.tunnel_id == tunnel_id)
        if not include_archived:
            stmt = stmt.where(TunnelCertificate.archived_at.is_(None))
        if before_id is not None:
            stmt = stmt.where(TunnelCertificate.id < before_id)
        return list((await self.session.scalars(stmt.order_by(TunnelCertificate.id.desc()).limit(limit))).all())

    async def archive_all(self, tunnel_id: str, now: datetime) -> list[str]:
        """Archive every non-archived certificate of the tunnel; their ids, oldest first."""
        archived = [row.id for row in await self.active(tunnel_id)]
        if archived:
            await self.session.execute(
                update(TunnelCertificate)
                .where(TunnelCertificate.id.in_(archived))
                .values(archived_at=now)
                .execution_options(synchronize_session=False)
            )
        return archived


async def archive_tunnel(row: Tunnel, certificates: TunnelCertificates, now: datetime) -> list[str]:
    """Archive a live tunnel, whether on its own or with its workspace: every certificate archived,
    the token forgotten, the row (and so its hostname, under the unique constraint) kept. Returns
    the archived certificates' ids, oldest first."""
    row.archived_at = now
    row.token_id = row.token_encrypted = row.token_hash = None
    return await certificates.archive_all(row.id, now)
