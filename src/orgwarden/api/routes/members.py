"""``/v1/organizations/workspaces/{workspace_id}/members``: add, get, list, update, remove."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import AddMember, UpdateMember
from orgwarden.domain.policy import Permission

routes = AdminRouter()
BASE = "/v1/organizations/workspaces/{workspace_id}/members"


@routes.route("POST", BASE, permission=Permission.MEMBERS_WRITE)
async def add_member(request: Request, workspace_id: str) -> Response:
    body = await parse_body(request, AddMember)
    added = await services(request).members.add(
        context(request), workspace_id, user_id=body.user_id, role=body.workspace_role
    )
    return ok(render.member(added))


@routes.route("GET", BASE, permission=Permission.MEMBERS_READ)
async def list_members(request: Request, workspace_id: str) -> Response:
    result = await services(request).members.list(context(request), workspace_id, QueryParams(request).cursor())
    return ok(render.page(result, render.member, key=lambda row: row.user_id))


@routes.route("GET", BASE + "/{user_id}", permission=Permission.MEMBERS_READ)
async def get_member(request: Request, workspace_id: str, user_id: str) -> Response:
    return ok(render.member(await services(request).members.get(context(request), workspace_id, user_id)))


@routes.route("POST", BASE + "/{user_id}", permission=Permission.MEMBERS_WRITE)
async def update_member(request: Request, workspace_id: str, user_id: str) -> Response:
    body = await parse_body(request, UpdateMember)
    updated = await services(request).members.update(context(request), workspace_id, user_id, role=body.workspace_role)
    return ok(render.member(updated))


@routes.route("DELETE", BASE + "/{user_id}", permission=Permission.MEMBERS_WRITE)
async def remove_member(request: Request, workspace_id: str, user_id: str) -> Response:
    await services(request).members.remove(context(request), workspace_id, user_id)
    return ok({"type": "workspace_member_deleted", "user_id": user_id, "workspace_id": workspace_id})
