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

from sqlalchemy import (
    DateTime,
    MetaData,
    Row,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.domain.rollups import COSTS, DIMENSIONS, MEASURES, WIDTHS, floor
from orgwarden.storage.tables import Organization, UsageRollup

_KEY = ("organization_id", "bucket_width", "bucket_start", *DIMENSIONS)
_upserts: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET measure = measure + excluded.measure``."""
    statement = _upserts.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(UsageRollup)
        statement = _upserts[dialect] = statement.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={name: getattr(UsageRollup, name) + getattr(statement.excluded, name) for name in MEASURES},
        )
    return statement


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
        """Add ``rows`` (from ``domain.rollups.fold``, sorted by key) to the stored rows: one
        single-row upsert run for every row (executemany), in the order given, so concurrent writers
        lock rows in the same order. The statement is built once per dialect and compiled once (a
        multi-row ``VALUES`` differs with every batch's size, and compiling it anew cost about 6 ms a
        batch: bench/RESULTS.md)."""
        if not rows:
            return
        connection = await self.session.connection()
        await connection.execute(_upsert(connection.dialect.name), list(rows))

    async def spent(self, scope_type: str, scope_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, int]:
        """Metered cost in picodollars in [start, end), per organization, workspace or API key id.

        Spend limits' periods begin and end at UTC midnight, so the day rows hold exactly the spend
        of a period: a month is at most 31 rows per dimension combination, where the records are
        every request (seconds of scanning at ten million a month, while requests wait on the
        rebuilt counter). Written in the records' transaction, they agree with them to the request.
        """
        if not scope_ids:
            return {}
        if start != floor(start, "1d") or end != floor(end, "1d"):
            raise ValueError(f"spend is summed over whole UTC days, not [{start}, {end})")
        column = getattr(UsageRollup, "organization_id" if scope_type == "organization" else f"{scope_type}_id")
        dialect = self.session.get_bind().dialect.name
        source = _source(dialect, "1d")
        columns = source.c
        total = sum((columns[name] for name in COSTS[1:]), columns[COSTS[0]])
        stmt = (
            select(columns[column.key], func.sum(total))
            .where(
                # every organization's day rows (one in a deployment): the key's leading columns
                columns.organization_id.in_(select(Organization.id).scalar_subquery()),
                columns.bucket_width == "1d",
                columns.bucket_start >= start,
                columns.bucket_start < end,
                columns[column.key].in_(list(scope_ids)),
            )
            .group_by(columns[column.key])
        )
        return {str(scope): int(value) for scope, value in (await self.session.execute(stmt)).all()}

    async def last_used_days(self, organization_id: str, api_key_ids: Sequence[str]) -> dict[str, datetime]:
        """The start of the last UTC day each key has a ``1d`` row for (keys never metered are left
        out): the day rows are few (one per key, model and dimension a day), so this reads no records."""
        if not api_key_ids:
            return {}
        dialect = self.session.get_bind().dialect.name
        columns = _source(dialect, "1d").c
        stmt = (
            select(columns.api_key_id, func.max(columns.bucket_start))
            .where(
                columns.organization_id == organization_id,
                columns.bucket_width == "1d",
                columns.api_key_id.in_(sorted(set(api_key_ids))),
            )
            .group_by(columns.api_key_id)
        )
        return {str(key): day for key, day in (await self.session.execute(stmt)).all() if day is not None}

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

    async def cost_lines(self, query: CostQuery) -> Sequence[Sequence[Any]]:
        """The cost report's lines by description, merged and summed in SQL: one row per bucket,
        workspace, model, tier, context window and geo, of (bucket_start, workspace_id, model, tier,
        context_window, inference_geo, *amounts, searches, search cost).

        ``workspace_id`` is null for ``query.default_workspace``, and for every row without
        ``query.by_workspace``; ``tier`` is ``batch`` for the batch tier and ``standard`` for every
        other (rows differing only in a merged value are summed together). ``amounts`` has one entry
        per (tokens, cost) pair of ``query.kinds``: the summed cost in picodollars as exact decimal
        text (see ``sums``), or null when that token type has neither tokens nor cost in the row (no
        line). The web search measures (``query.search``) are summed as text for the caller to add
        up per bucket and workspace. ``bucket_start`` is the stored naive UTC value: the UTC type's
        conversion of every row costs more than the caller's conversion of each bucket once.

        Ordered by bucket, workspace (null first), model, tier, context window and geo, in code point
        order, as Python orders strings (PostgreSQL's ``C`` collation, SQLite's default ``BINARY``).

        A row per group and its amounts side by side, rather than a row per line: at 10 million records
        a month's 57,847 daily rows make 13,941 groups and 62,969 lines, and the driver reads a
        group's six values once instead of once per line (measured in bench/reports.py).
        """
        dialect = self.session.get_bind().dialect.name
        columns = _source(dialect, query.width).c
        workspace: Any = cast(null(), Text)  # typed, so that it can be collated in the ORDER BY
        if query.by_workspace:
            workspace = case((columns.workspace_id == query.default_workspace, null()), else_=columns.workspace_id)
        tier = case((columns.service_tier == "batch", literal("batch")), else_=literal("standard"))
        keys = [columns.model, tier, columns.context_window, columns.inference_geo]
        amounts = [
            case((or_(func.sum(columns[tokens]) > 0, func.sum(columns[cost]) > 0), cast(func.sum(columns[cost]), Text)))
            for tokens, cost in query.kinds
        ]
        stmt = (
            select(
                type_coerce(columns.bucket_start, DateTime()),
                workspace,
                *keys,
                *amounts,
                *(cast(func.sum(columns[name]), Text) for name in query.search),
            )
            .where(
                columns.organization_id == query.organization_id,
                columns.bucket_width == query.width,
                columns.bucket_start >= query.start,
                columns.bucket_start < query.end,
            )
            .group_by(columns.bucket_start, workspace, *keys)
            .order_by(
                columns.bucket_start,
                _code_points(dialect, workspace).nulls_first(),
                *(_code_points(dialect, key) for key in keys),
            )
        )
        connection = await self.session.connection()
        if dialect == "postgresql":
            await connection.execute(_CUSTOM_PLANS)  # see ``sums``
            # The groups' twelve numeric sums outgrow the default 4 MB: with it, the hash aggregate
            # and the sort spill to disk (bench/RESULTS.md); for this transaction only.
            await connection.execute(_COST_WORK_MEM)
        return (await connection.execute(stmt)).all()


_COST_WORK_MEM = text("SET LOCAL work_mem = '64MB'")


@dataclass(frozen=True, slots=True)
class CostQuery:
    """``UsageRollups.cost_lines``: costs per bucket, workspace, model, tier, context window and geo."""

    organization_id: str
    width: str
    start: datetime
    end: datetime
    default_workspace: str
    kinds: Sequence[tuple[str, str]]  # (tokens measure, cost measure) per token type
    by_workspace: bool = True  # else every line's workspace_id is null (the workspaces merged)
    search: tuple[str, str] = ("web_search_requests", "cost_web_search")  # (searches, their cost)


def _code_points(dialect: str, expression: Any) -> Any:
    """Text ordered by code point, as Python orders strings: PostgreSQL's ``C`` collation (UTF-8 bytes
    order as code points do); SQLite's default ``BINARY`` already does."""
    return expression.collate("C") if dialect == "postgresql" else expression


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
