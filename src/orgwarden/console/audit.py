"""The audit log in the console: ``/console/audit`` (filters, pages), one event, export, verify.

Every page calls the audit log service the Admin API (``GET /v1/organizations/audit_logs``) and the
CLI (``orgwarden audit``) call, with the same filters checked by the same code, so the console shows,
exports and verifies exactly what they do. Only ``audit:read`` (organization admins) may open them.

* ``/console/audit``: newest first, 50 a page, ``page`` cursors (the API's); filters as the API's
  parameters. A time is RFC 3339, or ``YYYY-MM-DD`` / ``YYYY-MM-DDTHH:MM`` read as UTC (what a person
  types, and what a ``datetime-local`` field sends).
* ``/console/audit/export?format=csv|jsonl&<filters>``: every matching event, newest first (the order
  of the page and of the API), streamed a thousand at a time. JSON Lines holds the API's records; CSV
  the same fields (the CLI's columns), ``details`` as compact JSON, cells made formula-safe.
* ``/console/audit/verify``: POST walks the whole hash chain (``AuditLogService.verify``, as
  ``orgwarden audit verify``) and shows ``ok`` with the count and head, or the first broken link.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orgwarden.api import render as api_render
from orgwarden.api.routing import services
from orgwarden.console.csv import cell
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.console.render import render, secure
from orgwarden.domain.audit_chain import GENESIS, HASHED_FIELDS
from orgwarden.domain.policy import Permission
from orgwarden.errors import InvalidRequest
from orgwarden.services.audit_log import audit_filter
from orgwarden.storage.audit_log import AuditFilter
from orgwarden.storage.tables import AuditEvent

routes = ConsolePages()
READ: Final = Permission.AUDIT_READ

PAGE_SIZE: Final = 50
EXPORT_CHUNK: Final = 1000
MAX_VALUE_CHARS: Final = 200
MAX_ACTIONS: Final = 20
TEXT_FILTERS: Final = ("actor_id", "actor_type", "target_type", "target_id", "workspace_id", "outcome")
TIME_FILTERS: Final = ("starting_at", "ending_at")
FORMATS: Final = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
CSV_COLUMNS: Final = ("type", *HASHED_FIELDS, "hash")
ACTOR_TYPES: Final = ("admin_api_key", "api_key", "anonymous", "cli", "invite_token", "scim_token", "system", "user")
OUTCOMES: Final = ("success", "failure", "denied", "refused", "invalid_request")

_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOCAL: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters as typed (for the form and the links) and as the service's ``AuditFilter``."""

    typed: dict[str, str]
    where: AuditFilter

    def query(self, **extra: str) -> str:
        """The query string of these filters (plus ``extra``), for links that keep them."""
        return urlencode({**{k: v for k, v in self.typed.items() if v}, **extra})


def _one(request: Request, name: str) -> str:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name}: given {len(values)} times; give it once")
    value = values[0].strip() if values else ""
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidRequest(f"{name}: longer than {MAX_VALUE_CHARS} characters")
    if "\x00" in value:
        raise InvalidRequest(f"{name}: must not contain NUL characters")
    return value


def moment(value: str) -> str | None:
    """A time as the service wants it (RFC 3339 with a zone): a bare date is midnight UTC, a time
    without a zone (``datetime-local``) is UTC; anything else goes as typed, for the service to judge."""
    if not value:
        return None
    if _DATE.fullmatch(value):
        return f"{value}T00:00:00Z"
    if _LOCAL.fullmatch(value):
        return f"{value}:00Z" if len(value) == 16 else f"{value}Z"
    return value


def read_filters(request: Request) -> Filters:
    """The filters of the query string, bounded and checked (400 naming the parameter)."""
    typed = {name: _one(request, name) for name in (*TEXT_FILTERS, *TIME_FILTERS)}
    raw_actions = [part.strip() for value in request.query_params.getlist("action") for part in value.split(",")]
    actions = [a for a in raw_actions if a]
    if len(actions) > MAX_ACTIONS:
        raise InvalidRequest(f"action: at most {MAX_ACTIONS} actions, got {len(actions)}")
    for action in actions:
        if len(action) > MAX_VALUE_CHARS or "\x00" in action:
            raise InvalidRequest(f"action: each action is at most {MAX_VALUE_CHARS} characters")
    typed["action"] = ", ".join(actions)
    where = audit_filter(
        actor_id=typed["actor_id"] or None, actor_type=typed["actor_type"] or None, actions=actions,
        target_type=typed["target_type"] or None, target_id=typed["target_id"] or None,
        workspace_id=typed["workspace_id"] or None, outcome=typed["outcome"] or None,
        starting_at=moment(typed["starting_at"]), ending_at=moment(typed["ending_at"]),
    )  # fmt: skip
    return Filters(typed, where)


def _as_typed(request: Request) -> Filters:
    """The filters as typed, unchecked: to show the form again beside the refusal."""
    typed = {n: request.query_params.get(n, "")[:MAX_VALUE_CHARS] for n in (*TEXT_FILTERS, *TIME_FILTERS)}
    typed["action"] = ", ".join(request.query_params.getlist("action"))[:MAX_VALUE_CHARS]
    return Filters(typed, AuditFilter())


def record(event: AuditEvent) -> dict[str, Any]:
    """The Admin API's record of ``event`` (every hashed field, ``type`` and ``hash``)."""
    return api_render.audit_event(event)


def csv_row(event: dict[str, Any]) -> list[str]:
    details = json.dumps(event["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return [cell(details if name == "details" else event[name]) for name in CSV_COLUMNS]


@routes.page("GET", "/console/audit", permission=READ, nav="Audit log")
async def audit_log(request: Request, who: Viewer) -> Response:
    """One page of the log, newest first; a bad filter shows the form again with the problem (400)."""
    try:
        filters = read_filters(request)
        cursor = _one(request, "page") or None
        result = await services(request).audit_log.list(who.context, filters.where, limit=PAGE_SIZE, page=cursor)
    except InvalidRequest as exc:
        return render(
            request, who, "audit.html", status=400, title="Audit log", filters=_as_typed(request),
            events=[], next_page=None, first_page=False, error=exc.message, actor_types=ACTOR_TYPES,
            outcomes=OUTCOMES,
        )  # fmt: skip
    return render(
        request, who, "audit.html", title="Audit log", filters=filters, events=[record(e) for e in result.items],
        next_page=result.next_page, first_page=cursor is None, error=None, actor_types=ACTOR_TYPES,
        outcomes=OUTCOMES,
    )  # fmt: skip


async def _lines(
    chunks: AsyncIterator[Sequence[AuditEvent]], first: Sequence[AuditEvent], fmt: str
) -> AsyncIterator[bytes]:
    """The export's body, a chunk of events at a time (the first chunk was read before answering)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([cell(c) for c in CSV_COLUMNS])
        yield out.getvalue().encode()
    chunk: Sequence[AuditEvent] = first
    while True:
        out = io.StringIO()
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerows(csv_row(record(e)) for e in chunk)
        else:
            out.writelines(json.dumps(record(e), ensure_ascii=False) + "\n" for e in chunk)
        if out.tell():
            yield out.getvalue().encode()
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return


@routes.page("GET", "/console/audit/export", permission=READ)
async def export(request: Request, who: Viewer) -> Response:
    """Every event the filters match, newest first, as CSV or JSON Lines (an attachment)."""
    fmt = _one(request, "format") or "csv"
    if fmt not in FORMATS:
        raise InvalidRequest(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    filters = read_filters(request)
    chunks = services(request).audit_log.every(who.context, filters.where, newest_first=True, page_size=EXPORT_CHUNK)
    try:  # the first read happens here, so a refusal or a database failure is still an error page
        first = await anext(chunks)
    except StopAsyncIteration:
        first = []
    response = StreamingResponse(
        _lines(chunks, first, fmt),
        media_type=FORMATS[fmt],
        headers={"content-disposition": f'attachment; filename="audit-log.{fmt}"'},
    )
    return secure(response)


@routes.page("GET", "/console/audit/verify", permission=READ)
async def verify_form(request: Request, who: Viewer) -> Response:
    """What verifying does, and the button (the walk itself is a POST: it reads the whole log)."""
    return render(request, who, "audit_verify.html", title="Verify the audit chain", result=None)


@routes.action("POST", "/console/audit/verify", permission=READ)
async def verify(request: Request, who: Viewer, form: Form) -> Response:
    """Walk the organization's chain, as ``orgwarden audit verify`` does, and show the outcome."""
    result = await services(request).audit_log.verify_recorded(who.context)
    return render(request, who, "audit_verify.html", title="Verify the audit chain", result=result)


@routes.page("GET", "/console/audit/{event_id}", permission=READ)
async def event(request: Request, who: Viewer, event_id: str) -> Response:
    """Every field of one event, its details pretty-printed, and its links in the chain."""
    found = await services(request).audit_log.get(who.context, event_id)
    shown = record(found.event)
    return render(
        request, who, "audit_event.html", title=f"Audit event {found.event.id}", event=shown,
        fields=[(name, shown[name]) for name in HASHED_FIELDS if name not in ("details", "prev_hash")],
        details=json.dumps(shown["details"], indent=2, sort_keys=True, ensure_ascii=False),
        previous=found.previous, following=found.next,
        linked=found.event.prev_hash == (found.previous.hash if found.previous is not None else GENESIS),
    )  # fmt: skip
