"""Reading and adding to the usage rollups (``tables.UsageRollup``).

Adding is an upsert that adds (``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``), which
SQLite and PostgreSQL both run atomically per row, so any number of gateway instances can add to the
same row. Reading sums the rows of one width over a time range, grouped by the asked dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.domain.rollups import DIMENSIONS, MEASURES
from orgwarden.storage.tables import UsageRollup

_KEY = ("organization_id", "bucket_width", "bucket_start", *DIMENSIONS)
_CHUNK = 1000  # rows per statement: well under both drivers' bound-parameter limits


@dataclass(frozen=True, slots=True)
class RollupQuery:
    """Sum ``measures`` per bucket (and per ``group_by``) for buckets in [start, end)."""

    organization_id: str
    width: str
    start: datetime
    end: datetime
    group_by: Sequence[str] = ()
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)  # dimension -> allowed values
    measures: Sequence[str] = MEASURES


class UsageRollups:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add ``rows`` (from ``domain.rollups.fold``, sorted by key) to the stored rows."""
        if not rows:
            return
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        for at in range(0, len(rows), _CHUNK):
            stmt = insert(UsageRollup).values(list(rows[at : at + _CHUNK]))
            stmt = stmt.on_conflict_do_update(
                index_elements=list(_KEY),
                set_={name: getattr(UsageRollup, name) + getattr(stmt.excluded, name) for name in MEASURES},
            )
            await self.session.execute(stmt)

    async def sums(self, query: RollupQuery) -> Sequence[Row[Any]]:
        """Rows of (bucket_start, *group_by, *measures), ordered by bucket and group."""
        groups = [getattr(UsageRollup, name) for name in query.group_by]
        stmt = (
            select(
                UsageRollup.bucket_start,
                *groups,
                *(func.sum(getattr(UsageRollup, name)).label(name) for name in query.measures),
            )
            .where(
                UsageRollup.organization_id == query.organization_id,
                UsageRollup.bucket_width == query.width,
                UsageRollup.bucket_start >= query.start,
                UsageRollup.bucket_start < query.end,
            )
            .group_by(UsageRollup.bucket_start, *groups)
            .order_by(UsageRollup.bucket_start, *groups)
        )
        for name, values in query.filters.items():
            stmt = stmt.where(getattr(UsageRollup, name).in_(list(values)))
        return (await self.session.execute(stmt)).all()
