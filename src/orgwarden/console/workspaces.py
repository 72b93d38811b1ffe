"""Console: the workspace list, creating one, a workspace's settings and upstream key, archiving.

Pages call the Admin API's own service methods with the viewer's context, so every refusal (a
workspace the viewer may not see: 404; one they see but may not change: 403) is the services'. The
forms shown are the ones the viewer's role in that workspace would pass (``WorkspaceService.
permissions``); a form forced by hand is still refused by the service. A refused form (400, 409)
re-renders the page with the message next to the form and the viewer's input kept.

Members (``console.workspace_members``) and the workspace's limits (``console.limits``) are drawn
on the same page (``workspace_page``) and post to their own modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from orgwarden import ids
from orgwarden.api.routing import services
from orgwarden.console import limit_views, render
from orgwarden.console import settings_fields as fields
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.domain import workspaces as ws_rules
from orgwarden.domain.policy import Permission, may_use
from orgwarden.domain.roles import ADDABLE_WORKSPACE_ROLES, WORKSPACE_ROLES
from orgwarden.errors import Conflict, InvalidRequest, PermissionDenied
from orgwarden.services.container import Services
from orgwarden.storage.pagination import Cursor
from orgwarden.storage.tables import User, Workspace

routes = ConsolePages()
router = routes.router

PAGE_SIZE: Final = 50
MAX_LISTED: Final = 1000  # members, users and keys read for one page
ROLE_ORDER: Final = (
    "workspace_user", "workspace_restricted_developer", "workspace_developer", "workspace_admin", "workspace_billing",
)  # fmt: skip

NOTICES: Final = {
    "workspace_created": "Workspace created.",
    "workspace_updated": "Settings saved.",
    "workspace_archived": "Workspace archived: its API keys and MCP tunnels no longer work.",
    "upstream_key_set": "Upstream API key saved. It is stored encrypted and never shown again.",
    "upstream_key_cleared": "Upstream API key cleared: the workspace uses the server's key again.",
}
render.notices(NOTICES)

Errors = Mapping[str, str]
Values = Mapping[str, Mapping[str, str]]


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def bounded_query(request: Request, name: str, limit: int = 100) -> str | None:
    value = request.query_params.get(name)
    return value[:limit] if value else None


# -- the list and creating -------------------------------------------------------------------------


@routes.page("GET", "/console/workspaces", permission=Permission.WORKSPACES_READ, nav="Workspaces")
async def workspace_list(request: Request, who: Viewer) -> Response:
    """Every workspace the viewer may see; archived ones with ``?archived=1``."""
    return await _list_page(request, who)


async def _list_page(
    request: Request,
    who: Viewer,
    *,
    status: int = 200,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
) -> Response:
    archived = request.query_params.get("archived") == "1"
    after, before = bounded_query(request, "after"), bounded_query(request, "before")
    page = await services(request).workspaces.list(
        who.context,
        Cursor(after_id=None if before else after, before_id=before, limit=PAGE_SIZE),
        include_archived=archived,
        include_default=True,
    )
    rows = [_summary(ws) for ws in page.items]
    more_back = page.has_more if before else after is not None
    more_on = True if before else page.has_more
    suffix = "&archived=1" if archived else ""
    prev_url = f"/console/workspaces?before={page.items[0].id}{suffix}" if page.items and more_back else None
    next_url = f"/console/workspaces?after={page.items[-1].id}{suffix}" if page.items and more_on else None
    return render.render(
        request, who, "workspaces.html", status=status, title="Workspaces",
        workspaces=rows, archived=archived, prev_url=prev_url, next_url=next_url,
        can_create=may_use(who.context.actor, Permission.WORKSPACES_CREATE),
        error=error, values=values or {}, geos=ws_rules.KNOWN_INFERENCE_GEOS,
        workspace_geos=ws_rules.KNOWN_WORKSPACE_GEOS, default_geo=ws_rules.DEFAULT_INFERENCE_GEO,
    )  # fmt: skip


def _summary(ws: Workspace) -> dict[str, Any]:
    return {
        "id": ws.id,
        "name": ws.name,
        "color": ws.display_color,
        "is_default": ws.is_default,
        "archived": ws.archived_at is not None,
        "residency": _residency_text(ws),
        "tags": ", ".join(f"{k}={v}" for k, v in sorted(ws.tags.items())),
        "created": ws.created_at.strftime("%Y-%m-%d"),
    }


def _residency_text(ws: Workspace) -> str:
    allowed = ws.allowed_inference_geos
    allowed_text = "any geo" if allowed == ws_rules.UNRESTRICTED else ", ".join(allowed)
    return f"stored in {ws.workspace_geo}; inference: {allowed_text} (default {ws.default_inference_geo})"


@routes.action("POST", "/console/workspaces", permission=Permission.WORKSPACES_CREATE)
async def create_workspace(request: Request, who: Viewer, form: Form) -> Response:
    try:
        created = await services(request).workspaces.create(
            who.context,
            name=fields.text(form, "name"),
            residency=fields.residency(form, creating=True),
            tags=fields.tags(form),
            display_color=fields.color(form),
        )
    except (InvalidRequest, Conflict) as exc:
        return await _list_page(request, who, status=exc.status, error=exc.message, values=form)
    return redirect(f"/console/workspaces/{created.id}?notice=workspace_created")


# -- one workspace ---------------------------------------------------------------------------------


@routes.page("GET", "/console/workspaces/{workspace_id}", permission=Permission.WORKSPACES_READ)
async def workspace_detail(request: Request, who: Viewer, workspace_id: str) -> Response:
    return await workspace_page(request, who, workspace_id)


async def user_directory(svc: Services, who: Viewer) -> dict[str, User]:
    """The organization's users by id (the first ``MAX_LISTED``): member names and the add form."""
    page = await svc.users.list(who.context, Cursor(limit=MAX_LISTED))
    return {user.id: user for user in page.items}


async def user_id_named(svc: Services, who: Viewer, named: str) -> str:
    """A user named by id or by email address (400 naming it when nobody matches)."""
    if not named:
        raise InvalidRequest("user: enter the email address (or user id) of a person in the organization")
    if ids.looks_like(ids.USER, named):
        return named
    page = await svc.users.list(who.context, Cursor(limit=1), email=named)
    if not page.items:
        raise InvalidRequest(f"user: nobody in the organization has the email address {named[:320]!r}")
    return page.items[0].id


async def workspace_page(
    request: Request, who: Viewer, workspace_id: str, *, status: int = 200,
    errors: Errors | None = None, values: Values | None = None,
) -> Response:  # fmt: skip
    """The workspace's page; ``errors`` / ``values`` by form (``settings``, ``member_add``,
    ``member:<user id>``, ``rate:<rate limit id>``, ``spend``, ``upstream``) after a refused post."""
    svc = services(request)
    ctx = who.context
    ws = await svc.workspaces.get(ctx, workspace_id)  # 404 if the viewer may not see it
    allowed = await svc.workspaces.permissions(ctx, workspace_id)
    active = ws.archived_at is None
    members = None
    directory: dict[str, User] = {}
    if Permission.MEMBERS_READ in allowed:
        directory = await user_directory(svc, who)
        page = await svc.members.list(ctx, workspace_id, Cursor(limit=MAX_LISTED))
        members = [
            {"user_id": m.user_id, "role": m.role, "added": m.created_at.strftime("%Y-%m-%d"),
             "label": _user_label(directory.get(m.user_id), m.user_id)}
            for m in page.items
        ]  # fmt: skip
    rate_rows = None
    if Permission.RATE_LIMITS_READ in allowed:
        rate_rows = await limit_views.workspace_rate_rows(svc, who, workspace_id)
    spend_rows = None
    if limit_views.may_spend(who):
        spend_rows = await limit_views.spend_rows(svc, who, "workspace", workspace_id=workspace_id)
    settings = {
        "name": ws.name,
        "display_color": ws.display_color,
        "tags": fields.tags_text(ws.tags),
        "allowed": "unrestricted" if ws.allowed_inference_geos == ws_rules.UNRESTRICTED else "listed",
        **{
            f"geo_{g}": "on" for g in (ws.allowed_inference_geos if isinstance(ws.allowed_inference_geos, list) else [])
        },
        "default_inference_geo": ws.default_inference_geo,
    }
    values = values or {}
    return render.render(
        request, who, "workspaces_detail.html", status=status, title=f"Workspace {ws.name}",
        ws=_summary(ws), workspace_geo=ws.workspace_geo, tags=sorted(ws.tags.items()),
        settings=values.get("settings", settings), values=values, errors=errors or {},
        can=lambda permission: active and Permission[permission] in allowed,
        may_archive=Permission.WORKSPACES_ARCHIVE in allowed and active and not ws.is_default,
        active=active, upstream_configured=ws.upstream_api_key_encrypted is not None,
        members=members, users=sorted(directory.values(), key=lambda u: u.email),
        addable_roles=[r for r in ROLE_ORDER if r in ADDABLE_WORKSPACE_ROLES],
        all_roles=[r for r in ROLE_ORDER if r in WORKSPACE_ROLES],
        rate_rows=rate_rows, limiters=limit_views.LIMITERS,
        spend_rows=spend_rows, may_spend_write=limit_views.may_spend(who, Permission.SPEND_LIMITS_WRITE) and active,
        periods=limit_views.PERIOD_CHOICES, geos=ws_rules.KNOWN_INFERENCE_GEOS,
    )  # fmt: skip


def _user_label(user: User | None, user_id: str) -> str:
    if user is None:
        return user_id
    return f"{user.name} <{user.email}>" if user.name else user.email


@routes.action("POST", "/console/workspaces/{workspace_id}", permission=Permission.WORKSPACES_WRITE)
async def update_workspace(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    svc = services(request)
    try:
        current = await svc.workspaces.get(who.context, workspace_id)
        await svc.workspaces.update(
            who.context,
            workspace_id,
            name=fields.text(form, "name"),
            residency=fields.residency(form, creating=False),
            tags=fields.tag_patch(current.tags, fields.tags(form)),
            display_color=fields.color(form),
        )
    except (InvalidRequest, Conflict) as exc:
        return await workspace_page(
            request, who, workspace_id, status=exc.status, errors={"settings": exc.message}, values={"settings": form}
        )
    return redirect(f"/console/workspaces/{workspace_id}?notice=workspace_updated")


# -- the upstream key (write-only) -----------------------------------------------------------------


@routes.action("POST", "/console/workspaces/{workspace_id}/upstream-key", permission=Permission.WORKSPACES_WRITE)
async def set_upstream_key(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    try:
        await services(request).workspaces.set_upstream_key(who.context, workspace_id, form.get("api_key", "").strip())
    except InvalidRequest as exc:  # the key itself is never echoed back into the form
        return await workspace_page(request, who, workspace_id, status=400, errors={"upstream": exc.message})
    return redirect(f"/console/workspaces/{workspace_id}?notice=upstream_key_set")


@routes.page("GET", "/console/workspaces/{workspace_id}/upstream-key/clear", permission=Permission.WORKSPACES_WRITE)
async def confirm_clear_upstream_key(request: Request, who: Viewer, workspace_id: str) -> Response:
    ws = await _writable(request, who, workspace_id)
    return render.render(
        request, who, "confirm.html",
        title=f"Clear the upstream API key of {ws.name}?",
        intro="This will delete the workspace's own upstream API key:",
        consequences=[
            "The stored key is deleted; it cannot be shown or restored (set it again to undo).",
            "Requests of this workspace go upstream with the server's own API key from then on.",
        ],
        action=f"/console/workspaces/{workspace_id}/upstream-key/clear", button="Clear the upstream key",
        cancel=f"/console/workspaces/{workspace_id}",
    )  # fmt: skip


@routes.action("POST", "/console/workspaces/{workspace_id}/upstream-key/clear", permission=Permission.WORKSPACES_WRITE)
async def clear_upstream_key(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    await services(request).workspaces.set_upstream_key(who.context, workspace_id, None)
    return redirect(f"/console/workspaces/{workspace_id}?notice=upstream_key_cleared")


async def _writable(request: Request, who: Viewer, workspace_id: str) -> Workspace:
    """The workspace, refused (403) on a confirm page whose action the viewer could not do there."""
    svc = services(request)
    ws = await svc.workspaces.get(who.context, workspace_id)
    if Permission.WORKSPACES_WRITE not in await svc.workspaces.permissions(who.context, workspace_id):
        raise PermissionDenied(f"your role does not have the workspaces:write permission in workspace {ws.id}")
    return ws


# -- archiving --------------------------------------------------------------------------------------


async def live_key_count(svc: Services, who: Viewer, workspace_id: str) -> int:
    """The workspace's API keys that archiving would archive (every one not archived yet)."""
    count, after = 0, None
    while True:
        page = await svc.api_keys.list(who.context, Cursor(after_id=after, limit=MAX_LISTED), workspace_id=workspace_id)
        count += sum(1 for key in page.items if key.status != "archived")
        if not page.has_more or not page.items:
            return count
        after = page.items[-1].id


@routes.page("GET", "/console/workspaces/{workspace_id}/archive", permission=Permission.WORKSPACES_ARCHIVE)
async def confirm_archive(request: Request, who: Viewer, workspace_id: str) -> Response:
    svc = services(request)
    ws = await svc.workspaces.get(who.context, workspace_id)
    if ws.is_default:
        raise InvalidRequest("the default workspace cannot be archived")
    if ws.archived_at is not None:
        raise InvalidRequest(f"workspace {ws.id} is already archived")
    keys = await live_key_count(svc, who, workspace_id)
    return render.render(
        request, who, "confirm.html",
        title=f"Archive the workspace {ws.name}?",
        intro=f"This will archive {ws.name} ({ws.id}) and revoke every key of the workspace:",
        consequences=[
            f"Every API key of the workspace is revoked: {keys} API key{'s' if keys != 1 else ''} "
            "(active, inactive or expired) will be archived and stop working at once.",
            "Its MCP tunnels are archived too.",
            "Its settings, members and limits can no longer be changed; its usage and audit history stay.",
            "Archiving cannot be undone.",
        ],
        action=f"/console/workspaces/{workspace_id}/archive", button="Archive the workspace",
        cancel=f"/console/workspaces/{workspace_id}",
    )  # fmt: skip


@routes.action("POST", "/console/workspaces/{workspace_id}/archive", permission=Permission.WORKSPACES_ARCHIVE)
async def archive_workspace(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    await services(request).workspaces.archive(who.context, workspace_id)
    return redirect(f"/console/workspaces/{workspace_id}?notice=workspace_archived")
