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

from sqlalchemy import MetaData, Row, Table, Text, cast, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.domain.rollups import DIMENSIONS, MEASURES, WIDTHS
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
        """Rows of (bucket_start, *group_by, *measures), ordered by bucket and group.

        Each sum comes back as its decimal text (``int()`` it): exact at any size, and read several
        times faster than PostgreSQL's ``numeric`` (what a sum of bigints is), which the driver turns
        into a ``Decimal`` (about 2 microseconds each: 0.3 s for a 31-day cost report by workspace and
        description at 10 million records). A ``bigint`` cast would be as fast but could overflow.
        """
        dialect = self.session.get_bind().dialect.name
        source = _source(dialect, query.width)
        columns = source.c
        groups = [columns[name] for name in query.group_by]
        stmt = (
            select(
                columns.bucket_start,
                *groups,
                *(cast(func.sum(columns[name]), Text).label(name) for name in query.measures),
            )
            .where(
                columns.organization_id == query.organization_id,
                columns.bucket_width == query.width,
                columns.bucket_start >= query.start,
                columns.bucket_start < query.end,
            )
            .group_by(columns.bucket_start, *groups)
            .order_by(columns.bucket_start, *groups)
        )
        for name, values in query.filters.items():
            stmt = stmt.where(columns[name].in_(list(values)))
        # Through the session's connection, not the ORM: plain rows, without the ORM's per-row
        # loading (a report can read tens of thousands of rows; measured in bench/reports.py).
        connection = await self.session.connection()
        if dialect == "postgresql":
            # The driver prepares each statement once per connection, and after five runs PostgreSQL
            # may settle on a generic plan, made without the range's values: for a 31-day daily
            # report it guesses ~300 rows instead of ~58,000 and sorts instead of hashing (164 ms
            # instead of 92 at 10 million records). A report is worth planning for its own range,
            # about a millisecond (PostgreSQL 12 or later).
            await connection.execute(_CUSTOM_PLANS)
        return (await connection.execute(stmt)).all()


_PARTITIONS: dict[str, Table] = {}
_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


def _source(dialect: str, width: str) -> Table:
    """What ``sums`` reads: on PostgreSQL the width's own partition (migration 0004), else the table.

    Naming the partition, rather than letting the planner prune the parent, also gives the planner
    that partition's statistics: through the parent it estimates the groups of a daily report from
    the statistics of all widths (19,447 groups for 3,720 at 10 million records), and plans a
    parallel external sort instead of an in-memory hash aggregate (bench/RESULTS.md)."""
    base = UsageRollup.__table__
    assert isinstance(base, Table)
    if dialect != "postgresql" or width not in WIDTHS:
        return base
    table = _PARTITIONS.get(width)
    if table is None:
        table = _PARTITIONS[width] = base.to_metadata(MetaData(), name=f"usage_rollups_{width}")
    return table
