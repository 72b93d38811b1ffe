"""Console: a workspace's members — add, change role, remove (after a confirmation).

Drawn on the workspace's page (``console.workspaces.workspace_page``); these are its form posts.
The user to add is named by email address or user id (the form offers the organization's users as
suggestions). ``MemberService`` decides who may do what, as for ``/v1/.../members``.
"""

from __future__ import annotations

from typing import Final

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.routing import services
from orgwarden.console import render
from orgwarden.console import settings_fields as fields
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.console.workspaces import redirect, user_id_named, workspace_page
from orgwarden.domain.policy import Permission
from orgwarden.errors import Conflict, InvalidRequest, NotFound, PermissionDenied

routes = ConsolePages()
router = routes.router

NOTICES: Final = {
    "member_added": "Member added.",
    "member_updated": "Role changed.",
    "member_removed": "Member removed from the workspace.",
}
render.notices(NOTICES)


@routes.action("POST", "/console/workspaces/{workspace_id}/members", permission=Permission.MEMBERS_WRITE)
async def add_member(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    svc = services(request)
    await svc.workspaces.get(who.context, workspace_id)  # an unknown or hidden workspace: 404, not a form error
    try:
        user_id = await user_id_named(svc, who, fields.text(form, "user"))
        await svc.members.add(who.context, workspace_id, user_id=user_id, role=fields.text(form, "role"))
    except (InvalidRequest, Conflict, NotFound) as exc:  # NotFound here: the user named
        status = 400 if isinstance(exc, NotFound) else exc.status
        return await workspace_page(
            request, who, workspace_id, status=status, errors={"member_add": exc.message}, values={"member_add": form}
        )
    return redirect(f"/console/workspaces/{workspace_id}?notice=member_added#members")


@routes.action("POST", "/console/workspaces/{workspace_id}/members/{user_id}", permission=Permission.MEMBERS_WRITE)
async def update_member(request: Request, who: Viewer, form: Form, workspace_id: str, user_id: str) -> Response:
    try:
        await services(request).members.update(who.context, workspace_id, user_id, role=fields.text(form, "role"))
    except InvalidRequest as exc:
        key = f"member:{user_id}"
        return await workspace_page(
            request, who, workspace_id, status=400, errors={key: exc.message}, values={key: form}
        )
    return redirect(f"/console/workspaces/{workspace_id}?notice=member_updated#members")


@routes.page("GET", "/console/workspaces/{workspace_id}/members/{user_id}/remove", permission=Permission.MEMBERS_WRITE)
async def confirm_remove_member(request: Request, who: Viewer, workspace_id: str, user_id: str) -> Response:
    svc = services(request)
    ws = await svc.workspaces.get(who.context, workspace_id)
    if Permission.MEMBERS_WRITE not in await svc.workspaces.permissions(who.context, workspace_id):
        raise PermissionDenied(f"your role does not have the members:write permission in workspace {ws.id}")
    member = await svc.members.get(who.context, workspace_id, user_id)
    user = await svc.users.get(who.context, user_id)
    return render.render(
        request, who, "confirm.html",
        title=f"Remove {user.email} from {ws.name}?",
        intro=f"This will remove {user.email} from the members of {ws.name}:",
        consequences=[
            f"{user.email} loses the {member.role} role in this workspace at once.",
            "Their access tokens stop working in this workspace unless their organization role still allows it.",
            "API keys they created stay: archive them on the API keys page if needed.",
        ],
        action=f"/console/workspaces/{workspace_id}/members/{user_id}/remove", button="Remove the member",
        cancel=f"/console/workspaces/{workspace_id}#members",
    )  # fmt: skip


@routes.action(
    "POST", "/console/workspaces/{workspace_id}/members/{user_id}/remove", permission=Permission.MEMBERS_WRITE
)
async def remove_member(request: Request, who: Viewer, form: Form, workspace_id: str, user_id: str) -> Response:
    await services(request).members.remove(who.context, workspace_id, user_id)
    return redirect(f"/console/workspaces/{workspace_id}?notice=member_removed#members")
