"""The Files API's uploads by workspace (``tables.StoredFile``), over a session factory.

The gateway writes one row per upload and reads one per file request: a short session each, as the
limit source does, outside the Admin API's unit of work (nothing else changes with it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orgwarden.storage.tables import StoredFile


class StoredFiles:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, row: StoredFile) -> None:
        async with self._sessions() as session, session.begin():
            await session.merge(row)

    async def get(self, file_id: str) -> StoredFile | None:
        async with self._sessions() as session:
            return await session.get(StoredFile, file_id)

    async def remove(self, file_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(delete(StoredFile).where(StoredFile.id == file_id))

    async def page(
        self, workspace_id: str, limit: int, *, after: tuple[datetime, str] | None, before: tuple[datetime, str] | None
    ) -> list[StoredFile]:
        """Up to ``limit + 1`` of a workspace's files, newest first, after (older than) or before
        (newer than) a file's (created_at, id); ``before`` pages come back newest first too."""
        stmt = select(StoredFile).where(StoredFile.workspace_id == workspace_id)
        key = tuple_(StoredFile.created_at, StoredFile.id)
        if after is not None:
            stmt = stmt.where(key < tuple_(*after))
        if before is not None:
            stmt = stmt.where(key > tuple_(*before))
            stmt = stmt.order_by(StoredFile.created_at.asc(), StoredFile.id.asc()).limit(limit + 1)
            async with self._sessions() as session:
                rows = list((await session.scalars(stmt)).all())
            return rows[::-1]
        stmt = stmt.order_by(StoredFile.created_at.desc(), StoredFile.id.desc()).limit(limit + 1)
        async with self._sessions() as session:
            return list((await session.scalars(stmt)).all())
