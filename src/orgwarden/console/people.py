"""Console pages for the people of the organization: users (list, role, removal) and invites.

Handlers call the same ``UserService`` and ``InviteService`` methods as ``/v1/organizations/users``
and ``/v1/organizations/invites`` with the viewer's context. Removing a user first shows what
offboarding will revoke, computed by ``services.offboarding.preview`` (``offboard`` itself, rolled
back); the confirmed POST runs ``UserService.remove``, audited as ``user.remove`` like the API's.
A new invite's accept link (it carries the invite's single-use token) is shown once, in the POST's
answer, never in a URL of ours or a cookie.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from orgwarden.api.routing import services
from orgwarden.console import render
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission, may_use
from orgwarden.domain.roles import ASSIGNABLE_ORG_ROLES, ORG_ROLES
from orgwarden.domain.statuses import invite_status
from orgwarden.errors import InvalidRequest
from orgwarden.storage.pagination import Cursor

routes = ConsolePages()
router = routes.router

PAGE_SIZE = 50
MAX_FILTER = 320  # the longest email address
ROLE_ORDER = ("user", "claude_code_user", "developer", "billing", "admin")
ASSIGNABLE = [role for role in ROLE_ORDER if role in ASSIGNABLE_ORG_ROLES]

NOTICES = {
    "role_changed": "The role was changed.",
    "user_removed": "The user was removed and offboarded.",
    "invite_deleted": "The invite was deleted: its link no longer works.",
}
render.notices(NOTICES)


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_FILTER:
        raise InvalidRequest(f"{name}: at most {MAX_FILTER} characters")
    return value or None


def _cursor(request: Request) -> Cursor:
    return Cursor(after_id=_query(request, "after_id"), before_id=_query(request, "before_id"), limit=PAGE_SIZE)


def _pages(
    base: str, request: Request, ids: list[str], has_more: bool, keep: dict[str, str | None]
) -> tuple[str | None, str | None]:
    """(previous, next) links for an id-cursor page, keeping the filters."""
    after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
    kept = {k: v for k, v in keep.items() if v}
    more_after = has_more if before is None else True
    more_before = after is not None or (before is not None and has_more)
    return (
        f"{base}?{urlencode({**kept, 'before_id': ids[0]})}" if ids and more_before else None,
        f"{base}?{urlencode({**kept, 'after_id': ids[-1]})}" if ids and more_after else None,
    )


# Users


@routes.page("GET", "/console/users", permission=Permission.USERS_READ, nav="Users")
async def user_list(request: Request, who: Viewer) -> Response:
    email, role = _query(request, "email"), _query(request, "role")
    result = await services(request).users.list(
        who.context, _cursor(request), email=email, roles=[role] if role else []
    )
    users = list(result.items)
    keep = {"email": email, "role": role}
    prev_url, next_url = _pages("/console/users", request, [u.id for u in users], result.has_more, keep)
    return render.render(
        request,
        who,
        "users.html",
        users=users,
        filters={"email": email or "", "role": role or ""},
        role_options=[(r, r) for r in ROLE_ORDER if r in ORG_ROLES],
        can_invite=may_use(who.context.actor, Permission.INVITES_WRITE),
        prev_url=prev_url,
        next_url=next_url,
    )


@routes.page("GET", "/console/users/{user_id}", permission=Permission.USERS_READ)
async def user_detail(request: Request, who: Viewer, user_id: str) -> Response:
    user = await services(request).users.get(who.context, user_id)
    return render.render(
        request,
        who,
        "users_detail.html",
        user=user,
        role_options=[(r, r) for r in ASSIGNABLE],
        can_manage=may_use(who.context.actor, Permission.USERS_WRITE) and user.removed_at is None,
    )


@routes.action("POST", "/console/users/{user_id}/role", permission=Permission.USERS_WRITE)
async def change_role(request: Request, who: Viewer, form: Form, user_id: str) -> Response:
    await services(request).users.update_role(who.context, user_id, form.get("role", ""))
    return RedirectResponse(f"/console/users/{user_id}?notice=role_changed", status_code=303)


@routes.page("GET", "/console/users/{user_id}/remove", permission=Permission.USERS_WRITE)
async def confirm_remove(request: Request, who: Viewer, user_id: str) -> Response:
    """The confirm page lists what ``offboard`` would revoke right now (``offboarding.preview``)."""
    svc = services(request).users
    user = await svc.get(who.context, user_id)
    preview = await svc.removal_preview(who.context, user_id)
    return render.render(request, who, "users_remove.html", user=user, preview=preview)


@routes.action("POST", "/console/users/{user_id}/remove", permission=Permission.USERS_WRITE)
async def remove_user(request: Request, who: Viewer, form: Form, user_id: str) -> Response:
    await services(request).users.remove(who.context, user_id)
    return RedirectResponse("/console/users?notice=user_removed", status_code=303)


# Invites


def accept_url(request: Request, token: str) -> str:
    """The link an invited person opens, as ``/v1/organizations/invites`` gives it: the token in the
    fragment, which browsers never send to a server."""
    configured: str | None = request.app.state.settings.public_url
    base = configured or str(request.base_url).rstrip("/")
    return f"{base}/invites/accept#token={token}"


async def _invites_page(
    request: Request, who: Viewer, *, status: int = 200, error: str | None = None, form: Form | None = None
) -> Response:
    email, state = _query(request, "email"), _query(request, "status")
    result = await services(request).invites.list(
        who.context, _cursor(request), email=email, statuses=[state] if state else []
    )
    now = utcnow()
    rows = [(invite, invite_status(invite.status, invite.expires_at, now)) for invite in result.items]
    can_write = may_use(who.context.actor, Permission.INVITES_WRITE)
    groups = []
    if can_write and may_use(who.context.actor, Permission.USERS_READ):
        groups = list((await services(request).rbac_groups.list(who.context, limit=1000, page=None)).items)
    keep = {"email": email, "status": state}
    prev_url, next_url = _pages("/console/invites", request, [i.id for i, _ in rows], result.has_more, keep)
    return render.render(
        request,
        who,
        "invites.html",
        status=status,
        rows=rows,
        filters={"email": email or "", "status": state or ""},
        status_options=[(s, s) for s in ("pending", "accepted", "expired", "deleted")],
        role_options=[(r, r) for r in ASSIGNABLE],
        group_options=[("", "No group")] + [(g.group.id, g.group.name) for g in groups],
        can_write=can_write,
        error=error,
        form=form or {},
        prev_url=prev_url,
        next_url=next_url,
    )


@routes.page("GET", "/console/invites", permission=Permission.INVITES_READ, nav="Invites")
async def invite_list(request: Request, who: Viewer) -> Response:
    return await _invites_page(request, who)


@routes.action("POST", "/console/invites", permission=Permission.INVITES_WRITE)
async def create_invite(request: Request, who: Viewer, form: Form) -> Response:
    """Create the invite and answer with its accept link, once."""
    group = form.get("rbac_group_id", "")
    try:
        created = await services(request).invites.create(
            who.context, email=form.get("email", ""), role=form.get("role", ""), rbac_group_ids=[group] if group else []
        )
    except InvalidRequest as exc:
        return await _invites_page(request, who, status=400, error=exc.message, form=form)
    return render.render(
        request, who, "invites_created.html", invite=created.invite, link=accept_url(request, created.token)
    )


@routes.page("GET", "/console/invites/{invite_id}/delete", permission=Permission.INVITES_WRITE)
async def confirm_delete_invite(request: Request, who: Viewer, invite_id: str) -> Response:
    invite = await services(request).invites.get(who.context, invite_id)
    return render.render(
        request,
        who,
        "confirm.html",
        title=f"Delete the invite for {invite.email}?",
        intro="This will delete the invite:",
        consequences=[
            f"The accept link sent to {invite.email} stops working, and signing in no longer accepts it.",
            "The deletion is recorded in the audit log; a new invite can be sent later.",
        ],
        action=f"/console/invites/{invite.id}/delete",
        button="Delete the invite",
        cancel="/console/invites",
    )


@routes.action("POST", "/console/invites/{invite_id}/delete", permission=Permission.INVITES_WRITE)
async def delete_invite(request: Request, who: Viewer, form: Form, invite_id: str) -> Response:
    await services(request).invites.delete(who.context, invite_id)
    return RedirectResponse("/console/invites?notice=invite_deleted", status_code=303)
