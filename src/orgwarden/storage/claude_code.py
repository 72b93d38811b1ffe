"""The Claude Code telemetry repository: daily aggregates added to in place, series progress, reads.

Aggregates are added with one upsert per row (``INSERT ... ON CONFLICT DO UPDATE SET n = n + new``),
so two instances adding to the same row at once both count. Series progress is read under a row
lock (``SELECT ... FOR UPDATE`` on PostgreSQL, after inserting any missing row so that there is one
to lock; SQLite already serializes writers), so that two exports of one series never both count
the same points. Rows are written in key order, which keeps concurrent writers from deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.domain.claude_code import API_ACTOR, USER_ACTOR
from orgwarden.storage.tables import (
    ApiKey,
    ClaudeCodeDaily,
    ClaudeCodeModelDaily,
    ClaudeCodeSeries,
    ClaudeCodeToolDaily,
    UsageRecord,
    User,
)

CHUNK = 500  # rows or ids per statement (SQLite allows 32766 bound parameters)
NO_POINT = -1  # start and time of a progress row inserted only to be locked: no point seen yet

Aggregate = type[ClaudeCodeDaily] | type[ClaudeCodeModelDaily] | type[ClaudeCodeToolDaily]


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class ClaudeCodeUsage:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self, table: Any) -> Any:
        dialect = self.session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

    # -- series progress -------------------------------------------------------------------------

    async def lock_series(
        self, organization_id: str, keys: Sequence[str], now: datetime
    ) -> dict[str, ClaudeCodeSeries]:
        """The progress rows of ``keys``, locked until the transaction ends; a series never seen has a
        row with ``time_unix_nano == NO_POINT``."""
        ordered = sorted(set(keys))
        found: dict[str, ClaudeCodeSeries] = {}
        for chunk in _chunks(ordered):
            blank = [
                {"organization_id": organization_id, "series_key": key, "start_unix_nano": NO_POINT,
                 "time_unix_nano": NO_POINT, "last_value": 0, "updated_at": now}
                for key in chunk
            ]  # fmt: skip
            await self.session.execute(self._insert(ClaudeCodeSeries).values(blank).on_conflict_do_nothing())
            rows = await self.session.scalars(
                select(ClaudeCodeSeries)
                .where(ClaudeCodeSeries.organization_id == organization_id, ClaudeCodeSeries.series_key.in_(chunk))
                .order_by(ClaudeCodeSeries.series_key)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            found.update((row.series_key, row) for row in rows)
        return found

    async def prune_series(self, before: datetime) -> None:
        """Forget series not exported to since ``before`` (ended sessions)."""
        await self.session.execute(delete(ClaudeCodeSeries).where(ClaudeCodeSeries.updated_at < before))

    # -- aggregates ------------------------------------------------------------------------------

    async def add(self, table: Aggregate, rows: Mapping[tuple[Any, ...], Mapping[str, Any]]) -> None:
        """Add each row's counters to the stored row with the same key (created at zero)."""
        if not rows:
            return
        keys = [column.name for column in table.__mapper__.primary_key]
        for key in sorted(rows):
            values = {**dict(zip(keys, key, strict=True)), **rows[key]}
            stmt = self._insert(table).values(values)
            counters = {
                name: getattr(table, name) + stmt.excluded[name]
                for name in rows[key]
                if name not in keys and name != "updated_at"
            }
            await self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=keys, set_={**counters, "updated_at": stmt.excluded.updated_at}
                )
            )

    # -- the report ------------------------------------------------------------------------------

    async def actors(
        self, organization_id: str, day: date, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """The day's actors in (type, actor) order, after ``after``, at most ``limit``."""
        table = ClaudeCodeDaily
        stmt = select(table.actor_type, table.actor).where(table.organization_id == organization_id, table.day == day)
        if after is not None:
            stmt = stmt.where(
                or_(table.actor_type > after[0], and_(table.actor_type == after[0], table.actor > after[1]))
            )
        stmt = stmt.distinct().order_by(table.actor_type, table.actor).limit(limit)
        return [(row.actor_type, row.actor) for row in await self.session.execute(stmt)]

    async def gateway_sessions(self, organization_id: str, day: date) -> dict[tuple[str, str], int]:
        """Distinct Claude Code sessions (``x-claude-code-session-id``) per actor in the day's usage
        records: a user's access token counts for the user (by email, as telemetry names them), an
        API key for the key."""
        start = datetime.combine(day, time.min, tzinfo=UTC)
        record = UsageRecord
        stmt = (
            select(record.user_id, record.api_key_id, User.email,
                   func.count(func.distinct(record.claude_code_session_id)))
            .outerjoin(User, User.id == record.user_id)
            .where(record.organization_id == organization_id, record.created_at >= start,
                   record.created_at < start + timedelta(days=1), record.claude_code_session_id.is_not(None))
            .group_by(record.user_id, record.api_key_id, User.email)
        )  # fmt: skip
        found: dict[tuple[str, str], int] = {}
        for user_id, api_key_id, email, sessions in await self.session.execute(stmt):
            actor = (USER_ACTOR, str(email or user_id)[:320]) if user_id else (API_ACTOR, str(api_key_id))
            found[actor] = found.get(actor, 0) + int(sessions)
        return found

    async def rows_for(
        self, table: Aggregate, organization_id: str, day: date, actors: Sequence[tuple[str, str]]
    ) -> list[Any]:
        """Every row of ``table`` for these actors on ``day``."""
        wanted = set(actors)
        found: list[Any] = []
        for chunk in _chunks(sorted({actor for _, actor in actors})):
            rows: Any = await self.session.scalars(
                select(table).where(table.organization_id == organization_id, table.day == day, table.actor.in_(chunk))
            )
            found.extend(row for row in rows if (row.actor_type, row.actor) in wanted)
        return found

    async def user_totals(
        self, organization_id: str, first: date, end: date, emails: Sequence[str]
    ) -> tuple[list[Any], list[Any]]:
        """Users' Claude Code figures summed over the days [first, end): rows of (email, sessions,
        commits, pull_requests, lines_added, lines_removed), and of (email, tool, accepted, rejected)."""
        daily, tools = ClaudeCodeDaily, ClaudeCodeToolDaily
        totals: list[Any] = []
        by_tool: list[Any] = []
        for chunk in _chunks(sorted(set(emails))):
            where = (daily.organization_id == organization_id, daily.day >= first, daily.day < end,
                     daily.actor_type == USER_ACTOR, daily.actor.in_(chunk))  # fmt: skip
            sums = [func.sum(getattr(daily, name)) for name in
                    ("sessions", "commits", "pull_requests", "lines_added", "lines_removed")]  # fmt: skip
            totals += (await self.session.execute(select(daily.actor, *sums).where(*where).group_by(daily.actor))).all()
            where = (tools.organization_id == organization_id, tools.day >= first, tools.day < end,
                     tools.actor_type == USER_ACTOR, tools.actor.in_(chunk))  # fmt: skip
            stmt = select(tools.actor, tools.tool, func.sum(tools.accepted), func.sum(tools.rejected))
            by_tool += (await self.session.execute(stmt.where(*where).group_by(tools.actor, tools.tool))).all()
        return totals, by_tool

    async def key_names(self, organization_id: str, key_ids: Sequence[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        for chunk in _chunks(sorted(set(key_ids))):
            rows = await self.session.execute(
                select(ApiKey.id, ApiKey.name).where(ApiKey.organization_id == organization_id, ApiKey.id.in_(chunk))
            )
            names.update((row.id, row.name) for row in rows)
        return names
