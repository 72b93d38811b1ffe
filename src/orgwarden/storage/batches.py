"""The message-batch repository (``tables.MessageBatch``), over one session.

Claiming and settling are conditional UPDATEs, so that across instances exactly one claim holder
meters a batch and exactly one settlement replaces its reservation: ``claim`` wins only while the
batch is unsettled and unclaimed (or its claim is older than the lease: its holder died mid-way), and
``settle`` only for the claim it names.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from orgwarden.storage.tables import MessageBatch, Workspace


class MessageBatches:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: MessageBatch) -> None:
        self.session.add(row)

    async def get(self, batch_id: str) -> MessageBatch | None:
        return await self.session.get(MessageBatch, batch_id)

    async def page(
        self, workspace_id: str, *, after_id: str | None, before_id: str | None, limit: int
    ) -> tuple[list[MessageBatch], bool]:
        """Up to ``limit`` of the workspace's batches not deleted, newest first, after (older than)
        ``after_id`` or before (newer than) ``before_id``; and whether there are more that way."""
        stmt = select(MessageBatch).where(MessageBatch.workspace_id == workspace_id, MessageBatch.deleted_at.is_(None))
        cursor = after_id or before_id
        if cursor is not None:
            anchor = await self.session.get(MessageBatch, cursor)
            if anchor is not None:
                key = (anchor.created_at, anchor.id)
                stmt = stmt.where(_older(key) if after_id else _newer(key))
        if before_id is not None:
            stmt = stmt.order_by(MessageBatch.created_at, MessageBatch.id)
        else:
            stmt = stmt.order_by(MessageBatch.created_at.desc(), MessageBatch.id.desc())
        rows = list((await self.session.scalars(stmt.limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        if before_id is not None:
            rows.reverse()
        return rows, more

    async def claim(self, batch_id: str, now: datetime, lease: timedelta) -> bool:
        """Take the batch for metering; False when it is settled, or claimed by someone within the lease."""
        stmt = (
            update(MessageBatch)
            .where(
                MessageBatch.id == batch_id,
                MessageBatch.settled_at.is_(None),
                or_(MessageBatch.metered_at.is_(None), MessageBatch.metered_at < now - lease),
            )
            .values(metered_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool((await self.session.execute(stmt)).rowcount)  # type: ignore[attr-defined]

    async def settle(self, batch_id: str, claimed_at: datetime, now: datetime, results: int, cost: int) -> bool:
        """Mark the batch metered and settled, if ``claimed_at`` is still its claim."""
        stmt = (
            update(MessageBatch)
            .where(
                MessageBatch.id == batch_id,
                MessageBatch.settled_at.is_(None),
                MessageBatch.metered_at == claimed_at,
            )
            .values(settled_at=now, metered_results=results, metered_picodollars=cost, processing_status="ended")
            .execution_options(synchronize_session=False)
        )
        return bool((await self.session.execute(stmt)).rowcount)  # type: ignore[attr-defined]

    async def set_status(self, batch_id: str, status: str) -> None:
        stmt = update(MessageBatch).where(MessageBatch.id == batch_id).values(processing_status=status)
        await self.session.execute(stmt.execution_options(synchronize_session=False))

    async def mark_deleted(self, batch_id: str, now: datetime) -> None:
        stmt = update(MessageBatch).where(MessageBatch.id == batch_id).values(deleted_at=now)
        await self.session.execute(stmt.execution_options(synchronize_session=False))

    async def unsettled(self, limit: int) -> list[tuple[MessageBatch, str | None]]:
        """Batches whose usage is not metered yet, oldest first, each with its workspace's sealed
        upstream key (None: the server's)."""
        stmt = (
            select(MessageBatch, Workspace.upstream_api_key_encrypted)
            .join(Workspace, Workspace.id == MessageBatch.workspace_id)
            .where(MessageBatch.settled_at.is_(None))
            .order_by(MessageBatch.created_at)
            .limit(limit)
        )
        return [(row, sealed) for row, sealed in (await self.session.execute(stmt)).all()]

    async def reservations(self) -> list[tuple[list[str], int]]:
        """The counters and amount every unsettled batch still holds reserved."""
        stmt = select(MessageBatch.reserved_counters, MessageBatch.reserved_picodollars).where(
            MessageBatch.settled_at.is_(None), MessageBatch.reserved_picodollars > 0
        )
        return [(list(counters), int(amount)) for counters, amount in (await self.session.execute(stmt)).all()]


def _older(key: tuple[datetime, str]) -> ColumnElement[bool]:
    created, batch_id = key
    return or_(MessageBatch.created_at < created, (MessageBatch.created_at == created) & (MessageBatch.id < batch_id))


def _newer(key: tuple[datetime, str]) -> ColumnElement[bool]:
    created, batch_id = key
    return or_(MessageBatch.created_at > created, (MessageBatch.created_at == created) & (MessageBatch.id > batch_id))
