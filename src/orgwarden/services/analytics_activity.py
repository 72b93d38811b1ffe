"""The SDK's activity analytics that orgwarden has data for: ``summaries`` and ``users``.

A user is active on a UTC day when their access token made a metered request that day (the usage
rollups' ``user_id``; API-key traffic belongs to no user). ``summaries`` counts active users per day
and over the 7- and 30-day windows ending that day, with the members (seats) and open invites as they
are now. ``users`` gives each member's figures for a day or a range of days: web searches from the
rollups, Claude Code's from its telemetry (``claude_code_metrics``); claude.ai's products (chat,
Cowork, Design, Office, Science) are not orgwarden's traffic and read zero.

Not supported, refused with a 400 naming the parameter: RBAC-group filters and grouping (orgwarden
keeps no history of group membership, which the API's "held the group that day" needs) and
``project_id`` filters (orgwarden records no claude.ai projects).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from orgwarden.domain.claude_code import REPORTED_TOOLS
from orgwarden.errors import InvalidRequest
from orgwarden.services import cursors
from orgwarden.services.analytics import _limit, _offset
from orgwarden.services.context import Context
from orgwarden.storage.rollups import RollupQuery
from orgwarden.storage.uow import UnitOfWorkFactory

MAX_DAYS = 366
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_METRICS_ZERO: dict[str, Any] = {
    "chat_metrics": {
        "connectors_used_count": 0, "distinct_artifacts_created_count": 0, "distinct_projects_created_count": 0,
        "message_count": 0, "shared_conversations_viewed_count": 0, "thinking_message_count": 0,
    },
    "cowork_metrics": {
        "action_count": 0, "artifacts_created_count": 0, "connectors_used_count": 0, "dispatch_turn_count": 0,
        "message_count": 0, "skills_used_count": 0,
    },
    "design_metrics": {"distinct_projects_created_count": 0, "message_count": 0},
    "office_metrics": {
        app: {"connectors_used_count": 0, "message_count": 0, "skills_used_count": 0}
        for app in ("excel", "outlook", "powerpoint", "word")
    },
    "science_metrics": {"delegation_count": 0, "message_count": 0, "remote_compute_job_count": 0,
                        "skills_used_count": 0},
}  # fmt: skip
UNSUPPORTED_DIMENSIONS = {
    "rbac_group_id": "orgwarden keeps no history of RBAC group membership",
    "project_id": "orgwarden records no claude.ai projects",
}


def parse_date(name: str, value: str) -> date:
    try:
        if not _DAY.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: {value!r} is not a UTC date in YYYY-MM-DD format") from None


def _days(starting: str, ending: str | None, today: date) -> tuple[date, date]:
    first = parse_date("starting_date", starting)
    end = parse_date("ending_date", ending) if ending is not None else today
    latest = today + timedelta(days=1)  # no lag here: tomorrow (exclusive) includes today so far
    if end > latest:
        raise InvalidRequest(f"ending_date: at most {latest.isoformat()} (today so far), got {end.isoformat()}")
    if end <= first:
        raise InvalidRequest(f"ending_date: {end.isoformat()} is not after starting_date {first.isoformat()}")
    if (end - first).days > MAX_DAYS:
        raise InvalidRequest(f"ending_date: the range may span at most {MAX_DAYS} days")
    return first, end


def _filters(values: Sequence[str], supported: Sequence[str]) -> dict[str, list[str]]:
    """``filter[]=dimension:value`` entries by dimension."""
    if len(values) > 100:
        raise InvalidRequest(f"filter: at most 100 entries, got {len(values)}")
    out: dict[str, list[str]] = {}
    for entry in values:
        dimension, sep, value = entry.partition(":")
        if not sep or not value:
            raise InvalidRequest(f"filter: {entry!r} is not dimension:value (e.g. user_id:user_01...)")
        if dimension in UNSUPPORTED_DIMENSIONS:
            raise InvalidRequest(f"filter: {dimension} is not supported: {UNSUPPORTED_DIMENSIONS[dimension]}")
        if dimension not in supported:
            raise InvalidRequest(f"filter: {dimension!r} is not a dimension of this endpoint")
        out.setdefault(dimension, []).append(value)
    return out


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


class ActivityService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def summaries(
        self,
        ctx: Context,
        *,
        starting_date: str | None,
        ending_date: str | None = None,
        filters: Sequence[str] = (),
        limit: str | None = None,
        page: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/summaries``: one entry per day of the range."""
        now = now or datetime.now(UTC)
        if starting_date is None:
            raise InvalidRequest("starting_date: required (a UTC date, YYYY-MM-DD)")
        first, end = _days(starting_date, ending_date, now.date())
        _filters(filters, ())
        _limit(limit, 100)
        if page is not None:
            raise InvalidRequest(f"page: {page!r} is not a cursor from this report (it returns every day at once)")
        async with self._uow() as uow:
            query = RollupQuery(
                ctx.organization_id, "1d", _midnight(first - timedelta(days=29)), _midnight(end), ["user_id"], {},
                ("requests",),
            )  # fmt: skip
            rows = await uow.rollups.sums(query)
            seats = await uow.users.count(ctx.organization_id)
            pending = await uow.invites.count_pending(ctx.organization_id, now)
        active: dict[date, set[str]] = {}
        for bucket, user_id, requests in (tuple(row) for row in rows):
            if user_id and int(requests):
                active.setdefault(bucket.astimezone(UTC).date(), set()).add(user_id)

        def users_in(day: date, days: int) -> int:
            seen: set[str] = set()
            for back in range(days):
                seen |= active.get(day - timedelta(days=back), set())
            return len(seen)

        def rate(count: int) -> float | None:
            return round(count * 100 / seats, 2) if seats else None

        data = []
        day = first
        while day < end:
            daily, weekly, monthly = users_in(day, 1), users_in(day, 7), users_in(day, 30)
            data.append({
                "starting_at": _stamp(day), "ending_at": _stamp(day + timedelta(days=1)),
                "daily_active_user_count": daily, "weekly_active_user_count": weekly,
                "monthly_active_user_count": monthly, "assigned_seat_count": seats, "pending_invite_count": pending,
                "daily_adoption_rate": rate(daily), "weekly_adoption_rate": rate(weekly),
                "monthly_adoption_rate": rate(monthly), "cowork_daily_active_user_count": 0,
                "cowork_weekly_active_user_count": 0, "cowork_monthly_active_user_count": 0,
            })  # fmt: skip
            day += timedelta(days=1)
        return {"data": data, "next_page": None}

    async def users(
        self,
        ctx: Context,
        *,
        day: str | None,
        starting_date: str | None,
        ending_date: str | None,
        filters: Sequence[str] = (),
        group_by: Sequence[str] = (),
        limit: str | None = None,
        order: str | None = None,
        order_by: str | None = None,
        page: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/organizations/analytics/users``: each member's activity, in email order."""
        today = (now or datetime.now(UTC)).date()
        if day is not None and starting_date is not None:
            raise InvalidRequest("date: give either date or starting_date, not both")
        if day is not None:
            if ending_date is not None:
                raise InvalidRequest("ending_date: only valid with starting_date")
            first = parse_date("date", day)
            if first > today:
                raise InvalidRequest(f"date: at most today ({today.isoformat()}), got {first.isoformat()}")
            end = first + timedelta(days=1)
        elif starting_date is not None:
            first, end = _days(starting_date, ending_date, today)
        else:
            raise InvalidRequest("date: required (a UTC date, YYYY-MM-DD), or starting_date for a range")
        for name in group_by:
            reason = UNSUPPORTED_DIMENSIONS.get(name, "the only grouping the API has is rbac_group_id")
            raise InvalidRequest(f"group_by: {name!r} is not supported: {reason}")
        wanted = _filters(filters, ("user_id",)).get("user_id")
        if order_by not in (None, "email_address"):
            raise InvalidRequest(f"order_by: {order_by!r} is not supported; orgwarden sorts by email_address")
        if order not in (None, "asc", "desc"):
            raise InvalidRequest(f"order: {order!r} is not one of asc, desc")
        size, offset = _limit(limit, 100), _offset("users", page)
        async with self._uow() as uow:
            members = await uow.users.members(ctx.organization_id)
            if wanted is not None:
                members = [m for m in members if m.id in set(wanted)]
            if order == "desc":
                members.reverse()
            chosen = members[offset : offset + size]
            query = RollupQuery(
                ctx.organization_id, "1d", _midnight(first), _midnight(end), ["user_id"],
                {"user_id": [m.id for m in chosen]}, ("web_search_requests",),
            )  # fmt: skip
            found = [list(row) for row in await uow.rollups.sums(query)] if chosen else []
            searches = {row[1]: int(row[2]) for row in found}
            totals, tools = await uow.claude_code.user_totals(
                ctx.organization_id, first, end, [m.email for m in chosen]
            )
        code = {row[0]: [int(v or 0) for v in row[1:]] for row in totals}
        actions: dict[str, dict[str, tuple[int, int]]] = {}
        for email, tool, accepted, rejected in tools:
            actions.setdefault(email, {})[tool] = (int(accepted or 0), int(rejected or 0))
        data = []
        for member in chosen:
            sessions, commits, pulls, added, removed = code.get(member.email, [0, 0, 0, 0, 0])
            used = actions.get(member.email, {})
            data.append({
                "user": {"id": member.id, "email_address": member.email, "type": "user"},
                "web_search_count": searches.get(member.id, 0),
                "claude_code_metrics": {
                    "core_metrics": {
                        "artifacts_created_count": 0, "commit_count": commits, "distinct_session_count": sessions,
                        "lines_of_code": {"added_count": added, "removed_count": removed},
                        "pull_request_count": pulls,
                    },
                    "tool_actions": {
                        tool: {"accepted_count": used.get(tool, (0, 0))[0], "rejected_count": used.get(tool, (0, 0))[1]}
                        for tool in REPORTED_TOOLS
                    },
                },
                **_METRICS_ZERO,
                "distinct_user_count": None,
            })  # fmt: skip
        more = offset + size < len(members)
        return {"data": data, "next_page": cursors.encode(f"users:{offset + size}") if more else None}
