"""The audit log in the database: events held until commit, sealed into the hash chain, read back.

**Sealing at commit.** ``add`` (an ORM event, from ``services.audit.record``) and ``insert_many``
(column dicts, from the gateway's recorder and the spend alerts) only queue events in the unit of
work; ``UnitOfWork.commit`` calls ``seal`` right before COMMIT. Sealing locks the organization's
chain head, numbers the events on from it, hashes them (``domain.audit_chain``), inserts them in one
multi-row INSERT and moves the head. So every writer is chained without knowing it, and the chain
is in commit order: what one transaction sealed is visible before the next one reads the head.

**Locks, and why in this order (PostgreSQL).** Control-plane use cases lock the organization row
``FOR UPDATE`` first (``Organizations.lock``) and seal last. Inserting an event takes ``FOR KEY
SHARE`` on its organization row (the foreign key). Were a writer to lock the chain head and *then*
insert, it could hold the head while waiting for a use case that holds the organization row and
waits for the head: a deadlock. So ``seal`` takes ``FOR KEY SHARE`` on the organizations first,
then the heads, in id order; the head is always the last lock taken and is held only for the
INSERT and the COMMIT. SQLite needs none of this: ``BEGIN IMMEDIATE`` already serializes writers.

A transaction that is rolled back (or never committed) drops its queued events with it: an event
exists exactly when the change it describes does. Queued events are not visible to queries in their
own transaction (nothing needs them there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy import insert as core_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.domain.audit_chain import GENESIS, Head, event_hash, normalized
from orgwarden.storage.tables import AuditChainHead, AuditEvent, Organization

COLUMNS = tuple(column.key for column in AuditEvent.__table__.columns)
SEAL_COLUMNS = ("seq", "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What an audit log query keeps: every given criterion must hold (a list: any of its values).

    ``starting_at`` is inclusive and ``ending_at`` exclusive, on ``occurred_at``."""

    actor_id: str | None = None
    actor_type: str | None = None
    actions: Sequence[str] = ()
    target_type: str | None = None
    target_id: str | None = None
    workspace_id: str | None = None
    outcome: str | None = None
    starting_at: datetime | None = None
    ending_at: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        equal = {
            AuditEvent.actor_id: self.actor_id,
            AuditEvent.actor_type: self.actor_type,
            AuditEvent.target_type: self.target_type,
            AuditEvent.target_id: self.target_id,
            AuditEvent.workspace_id: self.workspace_id,
            AuditEvent.outcome: self.outcome,
        }
        found = [column == value for column, value in equal.items() if value is not None]
        if self.actions:
            found.append(AuditEvent.action.in_(self.actions))
        if self.starting_at is not None:
            found.append(AuditEvent.occurred_at >= self.starting_at)
        if self.ending_at is not None:
            found.append(AuditEvent.occurred_at < self.ending_at)
        return found


class AuditEvents:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._pending: list[AuditEvent | dict[str, Any]] = []

    # -- writing -------------------------------------------------------------------------------------

    def add(self, event: AuditEvent) -> None:
        """Queue an event; it is sealed and inserted when the unit of work commits."""
        self._pending.append(event)

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Queue events given as column dicts (the recorder's batches); inserted at commit, in one
        multi-row INSERT, like ``add``'s. Async for the callers written when it inserted at once."""
        self._pending.extend(rows)

    async def existing(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` are stored already (the recorder writes replayed events only if
        absent; an absent one is chained at the end when sealed, so the chain stays valid)."""
        if not event_ids:
            return set()
        stmt = select(AuditEvent.id).where(AuditEvent.id.in_(list(event_ids)))
        return set((await self.session.scalars(stmt)).all())

    async def seal(self) -> None:
        """Chain and insert the queued events (see the module docstring). Called by
        ``UnitOfWork.commit`` just before COMMIT; a no-op when nothing is queued."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = [_row(item) for item in pending]
        organizations = sorted({row["organization_id"] for row in rows})
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                select(Organization.id)
                .where(Organization.id.in_(organizations))
                .order_by(Organization.id)
                .with_for_update(read=True, key_share=True)  # FOR KEY SHARE: what the inserts will need
            )
        for organization_id in organizations:
            head = await self._lock_head(organization_id)
            seq, link = head.seq, head.hash
            for row in rows:
                if row["organization_id"] == organization_id:
                    seq += 1
                    row["seq"], row["prev_hash"] = seq, link
                    row["hash"] = link = event_hash(row)
            await self.session.execute(
                update(AuditChainHead)
                .where(AuditChainHead.organization_id == organization_id)
                .values(seq=seq, hash=link)
            )
        await self.session.execute(core_insert(AuditEvent), rows)
        for item, row in zip(pending, rows, strict=True):
            if isinstance(item, AuditEvent):  # the caller's object shows what was stored
                item.details = row["details"]
                item.seq, item.prev_hash, item.hash = row["seq"], row["prev_hash"], row["hash"]

    async def _lock_head(self, organization_id: str) -> Head:
        """The organization's chain head, locked until COMMIT; created (seq 0) on its first event.
        ``ON CONFLICT DO NOTHING`` makes two first events at once meet on the one row."""
        stmt = (
            select(AuditChainHead.seq, AuditChainHead.hash)
            .where(AuditChainHead.organization_id == organization_id)
            .with_for_update()  # rendered on PostgreSQL only
        )
        row = (await self.session.execute(stmt)).first()
        if row is None:
            dialect = self.session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            await self.session.execute(
                insert(AuditChainHead)
                .values(organization_id=organization_id, seq=0, hash=GENESIS)
                .on_conflict_do_nothing(index_elements=["organization_id"])
            )
            row = (await self.session.execute(stmt)).one()
        return Head(int(row.seq), str(row.hash))

    # -- reading -------------------------------------------------------------------------------------

    async def all(self, organization_id: str) -> list[AuditEvent]:
        stmt = select(AuditEvent).where(AuditEvent.organization_id == organization_id).order_by(AuditEvent.id)
        return list((await self.session.scalars(stmt)).all())

    async def get(self, organization_id: str, event_id: str) -> AuditEvent | None:
        stmt = select(AuditEvent).where(AuditEvent.organization_id == organization_id, AuditEvent.id == event_id)
        return (await self.session.scalars(stmt)).first()

    async def at_seq(self, organization_id: str, seqs: Sequence[int]) -> list[AuditEvent]:
        """The events with these seqs (a detail page's neighbours in the chain)."""
        if not seqs:
            return []
        stmt = select(AuditEvent).where(AuditEvent.organization_id == organization_id, AuditEvent.seq.in_(list(seqs)))
        return list((await self.session.scalars(stmt.order_by(AuditEvent.seq))).all())

    async def page(
        self, organization_id: str, where: AuditFilter, *, after_seq: int | None, limit: int, newest_first: bool
    ) -> list[AuditEvent]:
        """Up to ``limit`` matching events past ``after_seq`` in the direction of travel (newest
        first: seq below it; oldest first: seq above it)."""
        stmt = select(AuditEvent).where(AuditEvent.organization_id == organization_id, *where.clauses())
        if after_seq is not None:
            stmt = stmt.where(AuditEvent.seq < after_seq if newest_first else AuditEvent.seq > after_seq)
        order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq.asc()
        return list((await self.session.scalars(stmt.order_by(order).limit(limit))).all())

    async def head(self, organization_id: str) -> Head | None:
        stmt = select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.organization_id == organization_id)
        row = (await self.session.execute(stmt)).first()
        return None if row is None else Head(int(row.seq), str(row.hash))

    async def chain(
        self, organization_id: str, *, after_seq: int, through_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Events in seq order as column dicts (no ORM objects: a verification reads them all)."""
        table = AuditEvent.__table__
        stmt = select(table).where(table.c.organization_id == organization_id, table.c.seq > after_seq)
        if through_seq is not None:
            stmt = stmt.where(table.c.seq <= through_seq)
        result = await self.session.execute(stmt.order_by(table.c.seq).limit(limit))
        return [dict(row) for row in result.mappings()]


def _row(item: AuditEvent | dict[str, Any]) -> dict[str, Any]:
    """An event's columns as a dict, ``details`` as it will read back (so it hashes the same)."""
    if isinstance(item, AuditEvent):
        row = {name: getattr(item, name) for name in COLUMNS if name not in SEAL_COLUMNS}
    else:
        row = {name: item.get(name) for name in COLUMNS if name not in SEAL_COLUMNS}
    row["details"] = normalized(row["details"])
    return row
