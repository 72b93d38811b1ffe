"""``orgwarden audit list|export|verify``: the audit log from the command line.

The commands call the audit log service the Admin API calls, so filters are checked by the same
code with the same messages. Nothing here (or anywhere) changes or deletes an event.

- ``list`` prints one page, newest first, as a table (``--json``: the API's records); the cursor of
  the next page is printed on standard error, for ``--page``.
- ``export`` writes **every** matching event, oldest first (the order of the chain, so a file can
  be checked link by link, and a later export continues where an earlier one ended; ``--newest-first``
  turns it round), as JSON Lines (one API record per line) or CSV (the same fields, ``details`` as
  compact JSON), page by page as they are read, to standard output or ``--output FILE``.
- ``verify`` walks the organization's whole chain in seq order: exit 0 with ``N events, chain
  intact`` and the head's hash (keep it elsewhere: it pins the log up to now), or exit 1 naming the
  first broken link (event id, seq, what is wrong).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import cli_context, err, fail, open_output, print_json, print_table, run, settings_from
from orgwarden.domain.audit_chain import HASHED_FIELDS
from orgwarden.errors import InvalidRequest

if TYPE_CHECKING:
    from orgwarden.services.audit_log import Verification
    from orgwarden.services.container import Services
    from orgwarden.storage.audit_log import AuditFilter

audit = typer.Typer(help="The audit log: list, export and verify its hash chain (read only).", no_args_is_help=True)

FORMATS = ("jsonl", "csv")
MAX_LIMIT = 1000  # the audit log service's MAX_LIMIT (a test checks it), not imported: --help stays light
CSV_COLUMNS = ("type", *HASHED_FIELDS, "hash")

ActorId = Annotated[str | None, typer.Option("--actor-id", help="Actor id (admin key, API key, cli:USER, …).")]
ActorType = Annotated[
    str | None,
    typer.Option("--actor-type", help="admin_api_key, api_key, cli, invite_token, system or anonymous."),
]
Action = Annotated[list[str] | None, typer.Option("--action", help="Action, e.g. workspace.create (repeat).")]
TargetType = Annotated[str | None, typer.Option("--target-type", help="Target type, e.g. api_key.")]
TargetId = Annotated[str | None, typer.Option("--target-id", help="Target id.")]
Workspace = Annotated[str | None, typer.Option("--workspace", help="Workspace id.")]
Outcome = Annotated[str | None, typer.Option("--outcome", help="success, denied, invalid_request …")]
Start = Annotated[str | None, typer.Option("--start", help="From this time, inclusive (RFC 3339 or YYYY-MM-DD).")]
End = Annotated[str | None, typer.Option("--end", help="Before this time, exclusive (RFC 3339 or YYYY-MM-DD).")]


def _moment(value: str | None) -> str | None:
    """A bare date means midnight UTC (the service, like the API, wants RFC 3339 with a zone)."""
    if value is not None and len(value) == 10 and value[4:5] == "-" and value[7:8] == "-":
        return f"{value}T00:00:00Z"
    return value


def _where(
    actor_id: str | None, actor_type: str | None, action: list[str] | None, target_type: str | None,
    target_id: str | None, workspace: str | None, outcome: str | None, start: str | None, end: str | None,
) -> AuditFilter:  # fmt: skip
    from orgwarden.services.audit_log import audit_filter

    try:
        return audit_filter(
            actor_id=actor_id, actor_type=actor_type, actions=action or (), target_type=target_type,
            target_id=target_id, workspace_id=workspace, outcome=outcome, starting_at=_moment(start),
            ending_at=_moment(end),
        )  # fmt: skip
    except InvalidRequest as exc:  # the service names the API's parameters; name the options
        fail(exc.message.replace("starting_at", "--start").replace("ending_at", "--end"))


@audit.command("list")
def audit_list(
    ctx: typer.Context,
    actor_id: ActorId = None,
    actor_type: ActorType = None,
    action: Action = None,
    target_type: TargetType = None,
    target_id: TargetId = None,
    workspace: Workspace = None,
    outcome: Outcome = None,
    start: Start = None,
    end: End = None,
    limit: Annotated[int, typer.Option("--limit", help=f"Events per page, 1 to {MAX_LIMIT}.")] = 50,
    page: Annotated[str | None, typer.Option("--page", help="The cursor a previous page printed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's records instead of a table.")] = False,
) -> None:
    """One page of the audit log, newest first."""

    async def work(services: Services) -> tuple[list[dict[str, Any]], str | None]:
        from orgwarden.api import render

        where = _where(actor_id, actor_type, action, target_type, target_id, workspace, outcome, start, end)
        result = await services.audit_log.list(await cli_context(services), where, limit=limit, page=page)
        return [render.audit_event(row) for row in result.items], result.next_page

    records, next_page = run(settings_from(ctx), work)
    if as_json:
        print_json(records)
    else:
        rows = [
            [
                r["seq"], r["occurred_at"][:19].replace("T", " "), f"{r['actor_type']} {r['actor_id']}", r["action"],
                f"{r['target_type']} {r['target_id']}", r["workspace_id"], r["outcome"],
            ]
            for r in records
        ]  # fmt: skip
        columns = ["seq", "occurred at (UTC)", "actor", "action", "target", "workspace", "outcome"]
        print_table("Audit log (newest first)", columns, rows)
    if next_page is not None:
        err.print(f"more events: --page {next_page}", highlight=False, soft_wrap=True)


class _Writer:
    """JSON Lines or CSV, to standard output or a file opened at the first event (a refused export
    leaves no empty file behind)."""

    def __init__(self, fmt: str, output: Path | None) -> None:
        self.fmt = fmt
        self.output = output
        self._file: IO[str] | None = None
        self._csv: Any = None

    def _open(self) -> IO[str]:
        if self._file is None:
            self._file = open_output(self.output)
            if self.fmt == "csv":
                self._csv = csv.writer(self._file, lineterminator="\n")
                self._csv.writerow(CSV_COLUMNS)
        return self._file

    def write(self, record: dict[str, Any]) -> None:
        handle = self._open()
        if self.fmt == "jsonl":
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        details = json.dumps(record["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self._csv.writerow(["" if v is None else details if k == "details" else v for k, v in record.items()])

    def close(self) -> None:
        handle = self._open()  # an export of nothing still writes its CSV header, or an empty file
        handle.flush()
        if self.output is not None:
            handle.close()


@audit.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file, not standard output.")] = None,
    newest_first: Annotated[bool, typer.Option("--newest-first", help="Newest first (default: oldest).")] = False,
    actor_id: ActorId = None,
    actor_type: ActorType = None,
    action: Action = None,
    target_type: TargetType = None,
    target_id: TargetId = None,
    workspace: Workspace = None,
    outcome: Outcome = None,
    start: Start = None,
    end: End = None,
) -> None:
    """Every matching event, oldest first, as JSON Lines or CSV, written page by page."""
    if fmt not in FORMATS:
        fail(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    writer = _Writer(fmt, output)

    async def work(services: Services) -> bool:
        from orgwarden.api import render

        where = _where(actor_id, actor_type, action, target_type, target_id, workspace, outcome, start, end)
        context = await cli_context(services)
        try:
            async for rows in services.audit_log.every(context, where, newest_first=newest_first):
                for row in rows:
                    writer.write(render.audit_event(row))
        except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as Unix tools do
            return False
        return True

    if run(settings_from(ctx), work):
        writer.close()
    else:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into


@audit.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the organization's whole hash chain; exit 1 naming the first broken link."""

    async def work(services: Services) -> Verification:
        context = await cli_context(services)
        return await services.audit_log.verify(context.organization_id)

    result = run(settings_from(ctx), work)
    if result.broken is not None:
        broken = result.broken
        where = f"event {broken.event_id} (seq {broken.seq})" if broken.event_id else f"seq {broken.seq}"
        fail(f"audit chain broken at {where}: {broken.message} [{broken.problem}]")
    typer.echo(f"{result.events} events, chain intact (head: seq {result.head.seq}, hash {result.head.hash})")
