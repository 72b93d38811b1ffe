"""Console pages for data-plane API keys: list (filters, flags), create (secret shown once), detail
(rename, deactivate/activate, archive behind a confirm page).

Every page calls the same ``ApiKeyService`` methods as ``/v1/organizations/api_keys`` with the
viewer's context, so a viewer sees and changes exactly the keys the Admin API would let them.

Flags on the list:
- "expires within 7 days": a live (active or inactive) key whose ``expires_at`` falls in the next 7 days;
- "unused for 30 days or more": a live key created 30 or more days ago with no metered ``/v1/messages``
  request in the last 30 days. Last use comes from the daily usage rollups (``ApiKeyService.last_used``:
  the last UTC day with usage), so it is known to the day, and a key with no usage at all reads "never".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from orgwarden.api.routing import services
from orgwarden.console import render
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission, may_use
from orgwarden.domain.statuses import api_key_status
from orgwarden.errors import InvalidRequest
from orgwarden.storage.pagination import Cursor
from orgwarden.storage.tables import ApiKey, Workspace

routes = ConsolePages()
router = routes.router

PAGE_SIZE = 50
EXPIRY_WINDOW = timedelta(days=7)
UNUSED_AFTER = timedelta(days=30)
MAX_FILTER = 128  # a query-string filter longer than any id is refused before it reaches a service

NOTICES = {
    "key_renamed": "The key was renamed.",
    "key_activated": "The key is active again.",
    "key_deactivated": "The key was deactivated: requests with it are refused.",
    "key_archived": "The key was archived. It can no longer be used or changed.",
}
render.notices(NOTICES)


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: ApiKey
    status: str
    workspace_name: str
    creator: str
    last_used: datetime | None
    expiring_soon: bool
    unused: bool


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def flags(key: ApiKey, status: str, last_used: datetime | None, now: datetime) -> tuple[bool, bool]:
    """(expires within 7 days, unused for 30 days or more) for one key; see the module docstring."""
    if status not in ("active", "inactive"):
        return False, False
    expiring = key.expires_at is not None and now < _aware(key.expires_at) <= now + EXPIRY_WINDOW
    cutoff = now - UNUSED_AFTER
    old_enough = _aware(key.created_at) <= cutoff
    # ``last_used`` is the start of a UTC day: the key was used at some time within that day.
    idle = last_used is None or _aware(last_used) + timedelta(days=1) <= cutoff
    return expiring, old_enough and idle


def _filter(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_FILTER:
        raise InvalidRequest(f"{name}: at most {MAX_FILTER} characters")
    return value or None


async def _workspace_names(request: Request, who: Viewer) -> dict[str, Workspace]:
    page = await services(request).workspaces.list(who.context, Cursor(limit=1000), include_default=True)
    return {ws.id: ws for ws in page.items}


async def _user_emails(request: Request, who: Viewer) -> dict[str, str]:
    if not may_use(who.context.actor, Permission.USERS_READ):
        return {}
    page = await services(request).users.list(who.context, Cursor(limit=1000))
    return {user.id: user.email for user in page.items}


@routes.page("GET", "/console/keys", permission=Permission.API_KEYS_READ, nav="API keys")
async def key_list(request: Request, who: Viewer) -> Response:
    workspace_id, status, created_by = (
        _filter(request, "workspace"),
        _filter(request, "status"),
        _filter(request, "created_by"),
    )
    after, before = _filter(request, "after_id"), _filter(request, "before_id")
    svc = services(request).api_keys
    result = await svc.list(
        who.context,
        Cursor(after_id=after, before_id=before, limit=PAGE_SIZE),
        workspace_id=workspace_id,
        status=status,
        created_by_user_id=created_by,
    )
    now = utcnow()
    workspaces = await _workspace_names(request, who)
    emails = await _user_emails(request, who)
    used = await svc.last_used(who.context, [k.id for k in result.items])
    rows = []
    for key in result.items:
        derived = api_key_status(key.status, key.expires_at, now)
        expiring, unused = flags(key, derived, used.get(key.id), now)
        ws = workspaces.get(key.workspace_id)
        rows.append(
            KeyRow(
                key=key,
                status=derived,
                workspace_name=ws.name if ws else key.workspace_id,
                creator=emails.get(key.created_by_id, key.created_by_id),
                last_used=used.get(key.id),
                expiring_soon=expiring,
                unused=unused,
            )
        )
    items = list(result.items)
    more_after = result.has_more if before is None else True
    more_before = (after is not None) or (before is not None and result.has_more)
    can_create = bool(await svc.creatable_workspaces(who.context))
    kept = {"workspace": workspace_id, "status": status, "created_by": created_by}
    return render.render(
        request,
        who,
        "keys.html",
        rows=rows,
        workspaces_options=[
            (w.id, w.name + (" (default)" if w.is_default else ""))
            for w in sorted(workspaces.values(), key=lambda w: (not w.is_default, w.name.lower()))
        ],
        status_options=[(s, s) for s in ("active", "inactive", "expired", "archived")],
        user_options=sorted(emails.items(), key=lambda item: item[1]),
        filters={name: value or "" for name, value in kept.items()},
        next_url=_page_url(kept, after_id=items[-1].id) if items and more_after else None,
        prev_url=_page_url(kept, before_id=items[0].id) if items and more_before else None,
        can_create=can_create,
    )


def _page_url(filters: dict[str, str | None], **cursor: str) -> str:
    return "/console/keys?" + urlencode({**{k: v for k, v in filters.items() if v}, **cursor})


def _parse_expiry(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(f"expires: {value[:40]!r} is not a date (YYYY-MM-DD)") from None
    return day


async def _new_form(
    request: Request, who: Viewer, *, status: int = 200, error: str | None = None, form: Form | None = None
) -> Response:
    workspaces = await services(request).api_keys.creatable_workspaces(who.context)
    options = [(w.id, w.name + (" (default)" if w.is_default else "")) for w in workspaces]
    if not workspaces:
        message = "your role does not have the api_keys:write permission in any workspace"
        return render.error_page(request, who, 403, "Not allowed", message)
    return render.render(
        request, who, "keys_new.html", status=status, workspace_options=options, error=error, form=form or {}
    )


@routes.page("GET", "/console/keys/new", permission=Permission.API_KEYS_WRITE)
async def new_key(request: Request, who: Viewer) -> Response:
    return await _new_form(request, who)


@routes.action("POST", "/console/keys/new", permission=Permission.API_KEYS_WRITE)
async def create_key(request: Request, who: Viewer, form: Form) -> Response:
    """Create the key and answer with its secret, once: never put in a URL, a cookie or a log."""
    try:
        expires_at = _parse_expiry(form.get("expires", ""))
        created = await services(request).api_keys.create(
            who.context,
            name=form.get("name", ""),
            workspace_id=form.get("workspace_id") or None,
            expires_at=expires_at,
        )
    except InvalidRequest as exc:
        return await _new_form(request, who, status=400, error=exc.message, form=form)
    workspaces = await _workspace_names(request, who)
    ws = workspaces.get(created.key.workspace_id)
    return render.render(
        request,
        who,
        "keys_created.html",
        key=created.key,
        secret=created.secret,
        workspace_name=ws.name if ws else created.key.workspace_id,
    )


async def _writable(request: Request, who: Viewer, key: ApiKey) -> bool:
    return key.workspace_id in {ws.id for ws in await services(request).api_keys.creatable_workspaces(who.context)}


@routes.page("GET", "/console/keys/{key_id}", permission=Permission.API_KEYS_READ)
async def key_detail(request: Request, who: Viewer, key_id: str) -> Response:
    svc = services(request).api_keys
    key = await svc.get(who.context, key_id)
    now = utcnow()
    status = api_key_status(key.status, key.expires_at, now)
    used = (await svc.last_used(who.context, [key.id])).get(key.id)
    expiring, unused = flags(key, status, used, now)
    workspaces = await _workspace_names(request, who)
    emails = await _user_emails(request, who)
    ws = workspaces.get(key.workspace_id)
    return render.render(
        request,
        who,
        "keys_detail.html",
        row=KeyRow(
            key,
            status,
            ws.name if ws else key.workspace_id,
            emails.get(key.created_by_id, key.created_by_id),
            used,
            expiring,
            unused,
        ),
        writable=status != "archived" and await _writable(request, who, key),
    )


def _back(key_id: str, notice: str) -> Response:
    return RedirectResponse(f"/console/keys/{key_id}?notice={notice}", status_code=303)


@routes.action("POST", "/console/keys/{key_id}/rename", permission=Permission.API_KEYS_WRITE)
async def rename_key(request: Request, who: Viewer, form: Form, key_id: str) -> Response:
    await services(request).api_keys.update(who.context, key_id, name=form.get("name", ""))
    return _back(key_id, "key_renamed")


@routes.action("POST", "/console/keys/{key_id}/status", permission=Permission.API_KEYS_WRITE)
async def set_key_status(request: Request, who: Viewer, form: Form, key_id: str) -> Response:
    status = form.get("status", "")
    if status not in ("active", "inactive"):
        raise InvalidRequest("status: must be active or inactive (archive the key from its own page)")
    await services(request).api_keys.update(who.context, key_id, status=status)
    return _back(key_id, "key_activated" if status == "active" else "key_deactivated")


@routes.page("GET", "/console/keys/{key_id}/archive", permission=Permission.API_KEYS_WRITE)
async def confirm_archive(request: Request, who: Viewer, key_id: str) -> Response:
    key = await services(request).api_keys.get(who.context, key_id)
    return render.render(
        request,
        who,
        "confirm.html",
        title=f"Archive the API key {key.name}?",
        intro="This will archive the key:",
        consequences=[
            f"The key {key.name} ({key.partial_key_hint}) stops working at once: every request with it is refused.",
            "An archived key cannot be renamed, activated or changed again.",
            "Its usage stays in the reports; the archiving is recorded in the audit log.",
        ],
        action=f"/console/keys/{key.id}/archive",
        button="Archive the key",
        cancel=f"/console/keys/{key.id}",
    )


@routes.action("POST", "/console/keys/{key_id}/archive", permission=Permission.API_KEYS_WRITE)
async def archive_key(request: Request, who: Viewer, form: Form, key_id: str) -> Response:
    await services(request).api_keys.update(who.context, key_id, status="archived")
    return _back(key_id, "key_archived")
