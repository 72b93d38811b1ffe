"""``orgwarden report usage|cost|claude-code``: the Admin API's reports, every page, as a table, CSV or JSON.

The commands call the same report services as the Admin API, so the parameters are checked by the
same code and refused with the same messages (one line on stderr, exit 1). Each export reads **every**
page (of buckets between ``--start`` and ``--end``; of actors for the Claude Code report), asking
for the largest page the report allows, and:

- ``--format table`` (default) prints one Rich table once everything is read;
- ``--format csv`` writes one row per bucket and group (the table's rows), page by page as they come;
- ``--format json`` writes the API's answer with every page's ``data`` concatenated (``has_more``
  false, ``next_page`` null), page by page as well, so a long export never sits whole in memory.

A long export (more than one page) shows a progress bar on standard error when standard error is a
terminal and the data is not going to that terminal too (``--output FILE``, or standard output
redirected): the bar never mixes into a file, a pipe or the rows on screen. It is cleared when done.

The usage report's speed dimension is behind the ``fast-mode-2026-02-01`` beta in the API (a header).
A CLI user has no header to send, so the CLI always passes that beta: ``--speed`` and
``--group-by speed`` just work.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from orgwarden.cli.runtime import cli_context, err, fail, open_output, out, run, settings_from
from orgwarden.errors import InvalidRequest

if TYPE_CHECKING:
    from rich.progress import Progress

    from orgwarden.services.container import Services

report = typer.Typer(
    help="Usage, cost and Claude Code reports: every page, as a table, CSV or JSON.", no_args_is_help=True
)

FORMATS = ("table", "csv", "json")
USAGE_GROUP_HELP = (
    "api_key_id, workspace_id, model, service_tier, context_window, inference_geo, speed, account_id or "
    "service_account_id (repeat)."
)
# The usage report's token columns, flattened: (column, path in a result).
USAGE_COLUMNS = (
    ("uncached_input_tokens", ("uncached_input_tokens",)),
    ("cache_creation.ephemeral_5m_input_tokens", ("cache_creation", "ephemeral_5m_input_tokens")),
    ("cache_creation.ephemeral_1h_input_tokens", ("cache_creation", "ephemeral_1h_input_tokens")),
    ("cache_read_input_tokens", ("cache_read_input_tokens",)),
    ("output_tokens", ("output_tokens",)),
    ("server_tool_use.web_search_requests", ("server_tool_use", "web_search_requests")),
)
COST_DESCRIPTION_COLUMNS = (
    "description", "cost_type", "model", "service_tier", "token_type", "context_window", "inference_geo",
)  # fmt: skip

Start = Annotated[
    str, typer.Option("--start", help="First bucket: the one holding this time (RFC 3339, or YYYY-MM-DD for UTC).")
]
End = Annotated[
    str | None,
    typer.Option("--end", help="Buckets that end by this time (RFC 3339 or YYYY-MM-DD); else up to the current one."),
]
Format = Annotated[str, typer.Option("--format", help="table, csv or json.")]
Output = Annotated[Path | None, typer.Option("--output", help="Write to this file instead of standard output.")]


def _moment(value: str | None) -> str | None:
    """A bare date means midnight UTC (the API itself wants RFC 3339 with a zone)."""
    if value is not None and len(value) == 10 and value[4:5] == "-" and value[7:8] == "-":
        return f"{value}T00:00:00Z"
    return value


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        fail(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")


async def _pages(fetch: Callable[[str | None], Awaitable[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    """Every answer of a paged report, following ``next_page`` until ``has_more`` is false."""
    page: str | None = None
    while True:
        answer = await fetch(page)
        yield answer
        if not answer["has_more"]:
            return
        page = answer["next_page"]


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


class Export:
    """Where an export goes, written as pages arrive (CSV, JSON) or once at the end (a table).

    The output file is opened at the first page, so a refused export leaves no empty file behind.
    """

    def __init__(self, fmt: str, output: Path | None, title: str, columns: Sequence[str]) -> None:
        self.fmt = fmt
        self.output = output
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []
        self._file: IO[str] | None = None
        self._csv: Any = None
        self._items = 0

    def _open(self) -> IO[str]:
        if self._file is None:
            self._file = open_output(self.output)
            if self.fmt == "csv":
                self._csv = csv.writer(self._file, lineterminator="\n")
                self._csv.writerow(self.columns)
            elif self.fmt == "json":
                self._file.write('{"data": [')
        return self._file

    def add(self, items: Sequence[dict[str, Any]], rows: Sequence[Sequence[Any]]) -> None:
        """One page: its ``data`` items (for JSON) and their flattened rows (for CSV and the table)."""
        handle = self._open()
        if self.fmt == "json":
            for item in items:
                handle.write(("\n" if self._items == 0 else ",\n") + json.dumps(item))
                self._items += 1
        elif self.fmt == "csv":
            self._csv.writerows([[_cell(v) for v in row] for row in rows])
        else:
            self.rows.extend([_cell(v) for v in row] for row in rows)

    def finish(self) -> None:
        from rich.table import Table

        handle = self._open()
        if self.fmt == "json":
            handle.write('\n], "has_more": false, "next_page": null}\n')
        elif self.fmt == "table":
            table = Table(title=self.title)
            for column in self.columns:
                table.add_column(column)
            for row in self.rows:
                table.add_row(*row)
            # A terminal gets the table at its width; a file or pipe gets it whole, never folded.
            console = out if self.output is None and out.is_terminal else Console(file=handle, width=100_000)
            console.print(table)
        if self.output is not None:
            handle.close()
        else:
            handle.flush()


class Bar:
    """A progress bar on standard error, started only once an export turns out to need a second page,
    and only when standard error is a terminal that the data does not go to. ``total`` is in items
    (buckets); None when unknown."""

    def __init__(self, what: str, total: int | None, export: Export) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.wanted = err.is_terminal and not (export.output is None and out.is_terminal)
        self._progress: Progress | None = None

    def page(self, items: int, more: bool) -> None:
        self.done += items
        if self._progress is None and more and self.wanted:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn(f"exporting {self.what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err, transient=True,
            )  # fmt: skip
            self._task = self._progress.add_task(self.what, total=self.total)
            self._progress.start()
            self._progress.update(self._task, completed=self.done)
        elif self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _buckets_between(width: str, start: str, end: str | None) -> int:
    """How many buckets the export spans (for the bar): the service's own cut of the range, one page
    as large as everything. Bad values are left for the service call to refuse."""
    from orgwarden.services.reports import LIMITS, window

    if width not in LIMITS:
        return 0
    try:
        return window(width, start, end, None, 10**9, datetime.now(UTC)).count
    except InvalidRequest:
        return 0


async def _export(
    export: Export,
    fetch: Callable[[str | None], Awaitable[dict[str, Any]]],
    flatten: Callable[[dict[str, Any]], list[list[Any]]],
    bar: Bar,
) -> None:
    """Every page of a report into ``export``: its ``data`` items and their flattened rows."""
    try:
        async for answer in _pages(fetch):
            items = answer["data"]
            export.add(items, [row for item in items for row in flatten(item)])
            bar.page(len(items), answer["has_more"])
    finally:
        bar.stop()
    export.finish()


@report.command("usage")
def usage(
    ctx: typer.Context,
    start: Start,
    end: End = None,
    width: Annotated[str, typer.Option("--width", help="Bucket width: 1m, 1h or 1d.")] = "1d",
    group_by: Annotated[list[str] | None, typer.Option("--group-by", help=USAGE_GROUP_HELP)] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Only these API key ids (repeat).")] = None,
    workspace: Annotated[list[str] | None, typer.Option("--workspace", help="Only these workspace ids.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Only these models.")] = None,
    service_tier: Annotated[list[str] | None, typer.Option("--service-tier", help="Only these service tiers.")] = None,
    context_window: Annotated[
        list[str] | None, typer.Option("--context-window", help="Only 0-200k or 200k-1M.")
    ] = None,
    inference_geo: Annotated[
        list[str] | None, typer.Option("--inference-geo", help="Only global, us or not_available.")
    ] = None,
    speed: Annotated[list[str] | None, typer.Option("--speed", help="Only standard or fast.")] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only these account ids.")] = None,
    service_account: Annotated[
        list[str] | None, typer.Option("--service-account", help="Only these service account ids.")
    ] = None,
    fmt: Format = "table",
    output: Output = None,
) -> None:
    """Tokens per bucket from --start to --end, grouped and filtered as in the usage report.

    Every page is read.
    Table and CSV: one row per bucket and group (empty buckets have none).
    An empty workspace_id is the default workspace.
    JSON: the API's answer, with every page's data in one list."""
    from orgwarden.services.reports import FAST_MODE_BETA, LIMITS

    _check_format(fmt)
    groups = list(group_by or [])
    filters = {
        "api_key_ids": api_key or [], "workspace_ids": workspace or [], "models": model or [],
        "service_tiers": service_tier or [], "context_window": context_window or [],
        "inference_geos": inference_geo or [], "speeds": speed or [], "account_ids": account or [],
        "service_account_ids": service_account or [],
    }  # fmt: skip
    starting_at, ending_at = _moment(start), _moment(end)
    assert starting_at is not None
    per_page = LIMITS.get(width, (1, 1))[1]
    columns = ["starting_at", "ending_at", *dict.fromkeys(groups), *(name for name, _ in USAGE_COLUMNS)]
    export = Export(fmt, output, f"Usage report ({width} buckets)", columns)

    def flatten(bucket: dict[str, Any]) -> list[list[Any]]:
        rows = []
        for result in bucket["results"]:
            row: list[Any] = [bucket["starting_at"], bucket["ending_at"], *(result[g] for g in dict.fromkeys(groups))]
            for _, path in USAGE_COLUMNS:
                value: Any = result
                for part in path:
                    value = value[part]
                row.append(value)
            rows.append(row)
        return rows

    async def work(services: Services) -> None:
        context = await cli_context(services)

        async def fetch(page: str | None) -> dict[str, Any]:
            return await services.reports.usage(
                context, starting_at=starting_at, ending_at=ending_at, bucket_width=width, group_by=groups,
                filters=filters, limit=str(per_page), page=page, betas={FAST_MODE_BETA},
            )  # fmt: skip

        total = _buckets_between(width, starting_at, ending_at) or None
        await _export(export, fetch, flatten, Bar("buckets", total, export))

    run(settings_from(ctx), work)


@report.command("cost")
def cost(
    ctx: typer.Context,
    start: Start,
    end: End = None,
    group_by: Annotated[
        list[str] | None, typer.Option("--group-by", help="workspace_id and/or description (repeat).")
    ] = None,
    fmt: Format = "table",
    output: Output = None,
) -> None:
    """Cost per day from --start to --end, in cents (exact decimal strings), as in the cost report.

    Every page is read.
    Table and CSV: one row per day and group.
    An empty workspace_id is the default workspace.
    JSON: the API's answer, with every page's data in one list."""
    from orgwarden.services.reports import COST_LIMITS

    _check_format(fmt)
    groups = list(group_by or [])
    starting_at, ending_at = _moment(start), _moment(end)
    assert starting_at is not None
    per_page = COST_LIMITS[1]
    grouped = (["workspace_id"] if "workspace_id" in groups else []) + (
        list(COST_DESCRIPTION_COLUMNS) if "description" in groups else []
    )
    columns = ["starting_at", "ending_at", *grouped, "amount", "currency"]
    export = Export(fmt, output, "Cost report (amounts in cents)", columns)

    def flatten(bucket: dict[str, Any]) -> list[list[Any]]:
        return [
            [bucket["starting_at"], bucket["ending_at"], *(r[name] for name in grouped), r["amount"], r["currency"]]
            for r in bucket["results"]
        ]

    async def work(services: Services) -> None:
        context = await cli_context(services)

        async def fetch(page: str | None) -> dict[str, Any]:
            return await services.reports.cost(
                context, starting_at=starting_at, ending_at=ending_at, group_by=groups, limit=str(per_page), page=page
            )

        total = _buckets_between("1d", starting_at, ending_at) or None
        await _export(export, fetch, flatten, Bar("days", total, export))

    run(settings_from(ctx), work)


CLAUDE_CODE_PAGE = 1000  # the report's largest page
CLAUDE_CODE_COLUMNS = (
    "date", "actor_type", "actor", "terminal_type", "num_sessions", "commits_by_claude_code",
    "pull_requests_by_claude_code", "lines_added", "lines_removed", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_creation_tokens", "estimated_cost_cents", "models",
)  # fmt: skip


@report.command("claude-code")
def claude_code(
    ctx: typer.Context,
    day: Annotated[str, typer.Option("--date", help="The UTC day, YYYY-MM-DD.")],
    fmt: Format = "table",
    output: Output = None,
) -> None:
    """Claude Code use per actor on one UTC day, as in the Claude Code report (from its telemetry).

    Every page is read.
    Table and CSV: one row per actor; tokens and estimated cost are summed over the actor's models
    (the cost as the sum of the amounts the report shows per model), and each code edit tool has an
    accepted and a rejected column.
    JSON: the API's answer, with every page's data in one list."""
    from orgwarden.api.routes.claude_code import record  # the API's rendering: only this command needs it
    from orgwarden.domain.claude_code import REPORTED_TOOLS

    _check_format(fmt)
    tools = [f"{tool}.{decision}" for tool in REPORTED_TOOLS for decision in ("accepted", "rejected")]
    export = Export(fmt, output, f"Claude Code report ({day})", [*CLAUDE_CODE_COLUMNS, *tools])

    def flatten(item: dict[str, Any]) -> list[list[Any]]:
        actor = item["actor"]
        core = item["core_metrics"]
        models = item["model_breakdown"]
        cost = sum((Decimal(str(m["estimated_cost"]["amount"])) for m in models), Decimal(0))
        row: list[Any] = [
            item["date"][:10], actor["type"], actor.get("email_address") or actor.get("api_key_name"),
            item["terminal_type"], core["num_sessions"], core["commits_by_claude_code"],
            core["pull_requests_by_claude_code"], core["lines_of_code"]["added"], core["lines_of_code"]["removed"],
            *(sum(m["tokens"][kind] for m in models) for kind in ("input", "output", "cache_read", "cache_creation")),
            format(cost, "f"), " ".join(m["model"] for m in models),
        ]  # fmt: skip
        for tool in REPORTED_TOOLS:
            row += [item["tool_actions"][tool]["accepted"], item["tool_actions"][tool]["rejected"]]
        return [row]

    async def work(services: Services) -> None:
        context = await cli_context(services)

        async def fetch(page: str | None) -> dict[str, Any]:
            result = await services.claude_code.report(context, day, CLAUDE_CODE_PAGE, page)
            data = [record(item, context.organization_id) for item in result.items]
            return {"data": data, "has_more": result.next_page is not None, "next_page": result.next_page}

        await _export(export, fetch, flatten, Bar("actors", None, export))

    run(settings_from(ctx), work)
