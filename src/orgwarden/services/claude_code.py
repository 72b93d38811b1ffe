"""Claude Code usage: adding an export's points to the daily aggregates, and the daily report.

Ingest runs one transaction per export: lock the progress of the export's series, work out what
each point adds (``domain.claude_code.advance``), add it to the aggregates, save the progress. An
export that fails half-way adds nothing, and its retry counts once. Exports come once a minute per
Claude Code process, so a transaction each is cheap; this is not the gateway's hot path.

The report has one record per UTC day and actor (user email, or API key), in (actor type, actor)
order: API keys first, by id, then users, by email. An actor seen in several terminals that day gets
one record whose ``terminal_type`` is the one with the most sessions (ties: the first by name); the
figures are summed over all of them.

Sessions come from two sources: the telemetry's ``session.count`` and the distinct
``x-claude-code-session-id`` values on the day's usage records (orgwarden's gateway sees them on
every Messages request, with or without OTLP export). Both count the same sessions when both are
there, so a record's ``sessions`` is the larger of the two, never their sum; an actor seen only by
the gateway (no export configured) still gets a record, with its sessions and no other figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from orgwarden.domain.claude_code import (
    API_ACTOR,
    MODEL_COUNTERS,
    Actor,
    Progress,
    Sample,
    Tally,
    actor_of,
    advance,
)
from orgwarden.errors import InvalidRequest
from orgwarden.services import cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.storage.claude_code import NO_POINT
from orgwarden.storage.tables import ClaudeCodeDaily, ClaudeCodeModelDaily, ClaudeCodeToolDaily
from orgwarden.storage.uow import UnitOfWorkFactory

KEEP_SERIES = timedelta(days=35)  # a series silent this long is forgotten (Claude Code sessions are shorter)
PRUNE_EVERY = timedelta(hours=1)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent an export: the API key that authenticated it, and its organization; or, for an
    export sent with a user's access token, the user (``api_key_id`` is then "")."""

    organization_id: str
    api_key_id: str
    user_email: str | None = None


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_picodollars: int


@dataclass(slots=True)
class DailyRecord:
    """One record of the report: one actor's Claude Code use on one UTC day."""

    day: date
    actor: Actor
    api_key_name: str | None  # for API actors: the key's name now
    terminal_type: str = ""
    sessions: int = 0
    commits: int = 0
    pull_requests: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    models: list[ModelUsage] = field(default_factory=list)
    tools: dict[str, tuple[int, int]] = field(default_factory=dict)  # tool key -> (accepted, rejected)


def parse_day(value: str | None) -> date:
    """``starting_at``: a UTC date, ``YYYY-MM-DD``."""
    if value is None:
        raise InvalidRequest("starting_at: required; give a UTC date as YYYY-MM-DD")
    try:
        if not _DAY.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"starting_at: {value!r} is not a UTC date in YYYY-MM-DD format") from None


def _cursor(day: date, page: str | None) -> tuple[str, str] | None:
    position = cursors.decode(page)
    if position is None:
        return None
    try:
        cursor_day, actor_type, actor = json.loads(position)
        if not all(isinstance(part, str) for part in (cursor_day, actor_type, actor)):
            raise ValueError
    except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deeply
        raise InvalidRequest(f"page: {page!r} is not a cursor from this report (use next_page)") from None
    if cursor_day != day.isoformat():
        raise InvalidRequest(f"page: this cursor belongs to starting_at={cursor_day}, not {day.isoformat()}")
    return actor_type, actor


class ClaudeCodeService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow
        self._pruned: datetime | None = None

    async def ingest(self, sender: Sender, samples: Sequence[Sample], now: datetime) -> None:
        if not samples:
            return
        tally = Tally()
        async with self._uow() as uow:
            rows = await uow.claude_code.lock_series(sender.organization_id, [s.series for s in samples], now)
            progress: dict[str, Progress | None] = {
                key: None if row.time_unix_nano == NO_POINT else Progress(
                    row.start_unix_nano, row.time_unix_nano, row.last_value
                )
                for key, row in rows.items()
            }  # fmt: skip
            for sample in sorted(samples, key=lambda s: (s.series, s.time_unix_nano)):
                amount, after = advance(progress[sample.series], sample)
                if after is not None:
                    progress[sample.series] = after
                tally.add(sample, amount, actor_of(sample.attributes, sender.api_key_id, sender.user_email))
            for key, row in rows.items():
                seen = progress[key]
                if seen is not None:
                    row.start_unix_nano, row.time_unix_nano, row.last_value = (
                        seen.start_unix_nano, seen.time_unix_nano, seen.last_value,
                    )  # fmt: skip
                    row.updated_at = now
            org = sender.organization_id
            for table, part in ((ClaudeCodeDaily, tally.daily), (ClaudeCodeModelDaily, tally.models),
                                (ClaudeCodeToolDaily, tally.tools)):  # fmt: skip
                await uow.claude_code.add(
                    table, {(org, *key): {**counters, "updated_at": now} for key, counters in part.items()}
                )
            if self._pruned is None or now - self._pruned > PRUNE_EVERY:
                self._pruned = now
                await uow.claude_code.prune_series(now - KEEP_SERIES)
            await uow.commit()

    async def report(
        self, ctx: Context, starting_at: str | None, limit: int, page: str | None
    ) -> CursorPage[DailyRecord]:
        day = parse_day(starting_at)
        after = _cursor(day, page)
        org = ctx.organization_id
        async with self._uow() as uow:
            repo = uow.claude_code
            actors = await repo.actors(org, day, after, limit + 1)
            seen = await repo.gateway_sessions(org, day)
            extra = [actor for actor in seen if after is None or actor > after]
            actors = sorted(set(actors) | set(extra))[: limit + 1]
            more, actors = len(actors) > limit, actors[:limit]
            core: list[ClaudeCodeDaily] = await repo.rows_for(ClaudeCodeDaily, org, day, actors)
            models: list[ClaudeCodeModelDaily] = await repo.rows_for(ClaudeCodeModelDaily, org, day, actors)
            tools: list[ClaudeCodeToolDaily] = await repo.rows_for(ClaudeCodeToolDaily, org, day, actors)
            names = await repo.key_names(org, [actor for kind, actor in actors if kind == API_ACTOR])
        records = {
            (kind, actor): DailyRecord(day, Actor(kind, actor), names.get(actor, actor) if kind == API_ACTOR else None)
            for kind, actor in actors
        }
        _merge_core(records, core)
        for key, record in records.items():
            record.sessions = max(record.sessions, seen.get(key, 0))
        for model in sorted(models, key=lambda r: r.model):
            usage = ModelUsage(model.model, *(getattr(model, name) for name in MODEL_COUNTERS))
            records[(model.actor_type, model.actor)].models.append(usage)
        for tool in tools:
            records[(tool.actor_type, tool.actor)].tools[tool.tool] = (tool.accepted, tool.rejected)
        data = [records[key] for key in actors]
        next_page = None
        if more and data:
            last = data[-1].actor
            next_page = cursors.encode(json.dumps([day.isoformat(), last.type, last.id]))
        return CursorPage(data, next_page)


def _merge_core(records: dict[tuple[str, str], DailyRecord], rows: Sequence[ClaudeCodeDaily]) -> None:
    sessions_by_terminal: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for row in rows:
        record = records[(row.actor_type, row.actor)]
        record.sessions += row.sessions
        record.commits += row.commits
        record.pull_requests += row.pull_requests
        record.lines_added += row.lines_added
        record.lines_removed += row.lines_removed
        sessions_by_terminal.setdefault((row.actor_type, row.actor), []).append((-row.sessions, row.terminal_type))
    for key, terminals in sessions_by_terminal.items():
        records[key].terminal_type = min(terminals)[1]
