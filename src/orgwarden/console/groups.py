"""Console pages for RBAC groups: the groups, the roles each grants, and their members.

The same ``RbacGroupService`` methods as ``/v1/organizations/rbac_groups``: reading needs
``users:read``, changing ``users:write``. A group's roles are shown as the API has them (``role_ids``,
named by ``rbac_roles``) and, as on the API, are read-only here: ``orgwarden groups set-roles`` sets
them. Groups provisioned by SCIM are the identity provider's: their members are shown, not changed.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from orgwarden.api.routing import services
from orgwarden.console import render
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.domain.policy import Permission, may_use
from orgwarden.errors import InvalidRequest
from orgwarden.services.rbac_groups import GroupView
from orgwarden.storage.pagination import Cursor

routes = ConsolePages()
router = routes.router

MAX_PAGE = 200  # a page cursor is a short base64 string
MAX_LISTED = 1000  # groups (and members of one group) shown on one page

NOTICES = {
    "group_created": "The group was created.",
    "group_member_added": "The user was added to the group; their roles were recomputed.",
    "group_member_removed": "The user was removed from the group; their roles were recomputed.",
}
render.notices(NOTICES)


def _page(request: Request) -> str | None:
    value = request.query_params.get("page", "")
    if len(value) > MAX_PAGE:
        raise InvalidRequest(f"page: at most {MAX_PAGE} characters")
    return value or None


async def _role_names(request: Request, who: Viewer) -> dict[str, str]:
    return {role.id: role.display_name for role in await services(request).rbac_groups.roles(who.context)}


def _roles_of(view: GroupView, names: dict[str, str]) -> list[str]:
    return [names.get(role_id, role_id) for role_id in view.role_ids]


@routes.page("GET", "/console/groups", permission=Permission.USERS_READ, nav="Groups")
async def group_list(request: Request, who: Viewer) -> Response:
    result = await services(request).rbac_groups.list(who.context, limit=100, page=_page(request))
    names = await _role_names(request, who)
    return render.render(
        request,
        who,
        "groups.html",
        groups=[(view.group, _roles_of(view, names)) for view in result.items],
        next_url=f"/console/groups?page={result.next_page}" if result.next_page else None,
        can_write=may_use(who.context.actor, Permission.USERS_WRITE),
    )


@routes.action("POST", "/console/groups", permission=Permission.USERS_WRITE)
async def create_group(request: Request, who: Viewer, form: Form) -> Response:
    view = await services(request).rbac_groups.create(who.context, name=form.get("name", ""))
    return RedirectResponse(f"/console/groups/{view.group.id}?notice=group_created", status_code=303)


@routes.page("GET", "/console/groups/{group_id}", permission=Permission.USERS_READ)
async def group_detail(request: Request, who: Viewer, group_id: str) -> Response:
    svc = services(request).rbac_groups
    view = await svc.get(who.context, group_id)
    members = await svc.members(who.context, group_id, limit=MAX_LISTED, page=None)
    can_write = may_use(who.context.actor, Permission.USERS_WRITE) and view.group.source_type != "scim"
    candidates: list[tuple[str, str]] = []
    if can_write:
        present = {member.user_id for member, _ in members.items}
        users = await services(request).users.list(who.context, Cursor(limit=MAX_LISTED))
        candidates = sorted(((u.id, u.email) for u in users.items if u.id not in present), key=lambda c: c[1])
    return render.render(
        request,
        who,
        "groups_detail.html",
        group=view.group,
        roles=_roles_of(view, await _role_names(request, who)),
        members=[user for _, user in members.items],
        more_members=members.next_page is not None,
        candidates=candidates,
        can_write=can_write,
    )


@routes.action("POST", "/console/groups/{group_id}/members", permission=Permission.USERS_WRITE)
async def add_member(request: Request, who: Viewer, form: Form, group_id: str) -> Response:
    await services(request).rbac_groups.add_member(who.context, group_id, form.get("user_id", ""))
    return RedirectResponse(f"/console/groups/{group_id}?notice=group_member_added", status_code=303)


@routes.action("POST", "/console/groups/{group_id}/members/{user_id}/remove", permission=Permission.USERS_WRITE)
async def remove_member(request: Request, who: Viewer, form: Form, group_id: str, user_id: str) -> Response:
    await services(request).rbac_groups.remove_member(who.context, group_id, user_id)
    return RedirectResponse(f"/console/groups/{group_id}?notice=group_member_removed", status_code=303)
