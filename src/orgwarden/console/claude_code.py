"""Claude Code (``/console/claude-code``): per person (or API key), sessions, lines, cost and tool
decisions over a range of UTC days, from ``services.claude_code`` (the Claude Code usage report the
Admin API serves one day at a time), summed here over the days asked for (at most 31)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from orgwarden.api.routing import services
from orgwarden.console import charts, filters
from orgwarden.console.pages import ConsolePages, Viewer
from orgwarden.console.render import render
from orgwarden.domain.claude_code import USER_ACTOR, cents
from orgwarden.domain.policy import Permission
from orgwarden.errors import InvalidRequest
from orgwarden.services.claude_code import DailyRecord, parse_day

routes = ConsolePages()

MAX_DAYS: Final = 31
PAGE_SIZE: Final = 1000
MAX_PAGES_PER_DAY: Final = 20


@dataclass
class Person:
    """One actor's totals over the range."""

    kind: str
    name: str
    sessions: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    commits: int = 0
    pull_requests: int = 0
    cost_picodollars: int = 0
    tools: dict[str, list[int]] = field(default_factory=dict)  # tool -> [accepted, rejected]

    def add(self, record: DailyRecord) -> None:
        self.sessions += record.sessions
        self.lines_added += record.lines_added
        self.lines_removed += record.lines_removed
        self.commits += record.commits
        self.pull_requests += record.pull_requests
        self.cost_picodollars += sum(m.cost_picodollars for m in record.models)
        for tool, (accepted, rejected) in record.tools.items():
            counts = self.tools.setdefault(tool, [0, 0])
            counts[0] += accepted
            counts[1] += rejected

    @property
    def accepted(self) -> int:
        return sum(a for a, _ in self.tools.values())

    @property
    def rejected(self) -> int:
        return sum(r for _, r in self.tools.values())

    @property
    def cost_usd(self) -> float:
        return float(cents(self.cost_picodollars)) / 100


def day_range(request: Request) -> tuple[date, date]:
    """``starting_at`` and ``ending_at`` (inclusive UTC days); the last 7 days by default."""
    last = parse_day(filters.one(request, "ending_at") or filters.days_ago(0).isoformat())
    first = parse_day(filters.one(request, "starting_at") or (last - timedelta(days=6)).isoformat())
    if last < first:
        raise InvalidRequest("ending_at: must not be before starting_at")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequest(f"the range is longer than {MAX_DAYS} days")
    return first, last


async def people(request: Request, who: Viewer, first: date, last: date) -> list[Person]:
    """Every actor's totals, most sessions first."""
    report = services(request).claude_code
    found: dict[tuple[str, str], Person] = {}
    day = first
    while day <= last:
        page: str | None = None
        for _ in range(MAX_PAGES_PER_DAY):
            result = await report.report(who.context, day.isoformat(), PAGE_SIZE, page)
            for record in result.items:
                name = record.actor.id if record.actor.type == USER_ACTOR else (record.api_key_name or record.actor.id)
                key = (record.actor.type, record.actor.id)
                found.setdefault(key, Person("user" if record.actor.type == USER_ACTOR else "API key", name)).add(
                    record
                )
            page = result.next_page
            if page is None:
                break
        day += timedelta(days=1)
    return sorted(found.values(), key=lambda p: (-p.sessions, -p.cost_picodollars, p.name))


@routes.page("GET", "/console/claude-code", permission=Permission.USAGE_READ, nav="Claude Code")
async def claude_code(request: Request, who: Viewer) -> Response:
    first, last = day_range(request)
    everyone = await people(request, who, first, last)
    rows = [
        [
            p.name, p.kind, str(p.sessions), str(p.lines_added), str(p.lines_removed), str(p.commits),
            str(p.pull_requests), f"{p.cost_usd:,.2f}", str(p.accepted), str(p.rejected),
            f"{p.accepted / (p.accepted + p.rejected):.0%}" if p.accepted + p.rejected else "",
        ]
        for p in everyone
    ]  # fmt: skip
    tools: dict[str, list[int]] = {}
    for p in everyone:
        for tool, (accepted, rejected) in p.tools.items():
            counts = tools.setdefault(tool, [0, 0])
            counts[0] += accepted
            counts[1] += rejected
    tool_rows = [[tool, str(a), str(r)] for tool, (a, r) in sorted(tools.items())]
    top = everyone[:12]
    points = [(p.name.split("@")[0][:14], p.cost_usd) for p in top]
    chart = charts.bar_chart(points, title="Cost per person (USD)", unit="USD")
    return render(
        request,
        who,
        "claude_code.html",
        title="Claude Code",
        starting_at=first.isoformat(),
        ending_at=last.isoformat(),
        rows=rows,
        tool_rows=tool_rows,
        chart=chart,
        chart_rows=[[p.name, f"{p.cost_usd:,.2f}"] for p in top],
        totals={
            "people": len(everyone),
            "sessions": sum(p.sessions for p in everyone),
            "lines": sum(p.lines_added for p in everyone),
            "cost": sum(p.cost_usd for p in everyone),
        },
    )
