"""RBAC groups and roles (the SDK's ``beta.organization.rbac_groups`` and ``rbac_roles``).

Groups: create, list, get, rename (``POST``), delete; members: list, add, remove. Roles: list, get,
and a role's permissions. Groups are about who may do what, so they need the users permissions
(``users:read`` to read, ``users:write`` to change). Beta headers are accepted, never required.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import Body
from orgwarden.domain.clock import rfc3339
from orgwarden.domain.policy import Permission
from orgwarden.services.rbac_groups import GroupView, Role
from orgwarden.storage.tables import RbacGroupMember, User

routes = AdminRouter()
BASE = "/v1/organizations/rbac_groups"


class CreateGroup(Body):
    name: str = Field(max_length=255)


class UpdateGroup(Body):
    name: str | None = Field(default=None, max_length=255)


class AddGroupMember(Body):
    user_id: str = Field(max_length=64)


def group(view: GroupView) -> dict[str, Any]:
    row = view.group
    return {
        "id": row.id,
        "created_at": rfc3339(row.created_at),
        "name": row.name,
        "role_ids": view.role_ids,
        "source_type": row.source_type,
        "type": "rbac_group",
        "updated_at": rfc3339(row.updated_at),
    }


def member(item: tuple[RbacGroupMember, User]) -> dict[str, Any]:
    row, user = item
    return {
        "created_at": rfc3339(row.created_at),
        "email": user.email,
        "rbac_group_id": row.group_id,
        "type": "rbac_group_member",
        "user_id": row.user_id,
    }


def role(item: Role) -> dict[str, Any]:
    return {
        "id": item.id,
        "created_at": rfc3339(item.created_at),
        "display_name": item.display_name,
        "source": {"type": "built_in"},
        "type": "rbac_role",
        "updated_at": rfc3339(item.created_at),
    }


def _limit(q: QueryParams) -> int:
    return q.integer("limit", default=20, low=1, high=1000)


@routes.route("POST", BASE, permission=Permission.USERS_WRITE)
async def create_group(request: Request) -> Response:
    body = await parse_body(request, CreateGroup)
    return ok(group(await services(request).rbac_groups.create(context(request), name=body.name)))


@routes.route("GET", BASE, permission=Permission.USERS_READ)
async def list_groups(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).rbac_groups.list(context(request), limit=_limit(q), page=q.string("page"))
    return ok(render.cursor_page(result, group))


@routes.route("GET", BASE + "/{rbac_group_id}", permission=Permission.USERS_READ)
async def get_group(request: Request, rbac_group_id: str) -> Response:
    return ok(group(await services(request).rbac_groups.get(context(request), rbac_group_id)))


@routes.route("POST", BASE + "/{rbac_group_id}", permission=Permission.USERS_WRITE)
async def update_group(request: Request, rbac_group_id: str) -> Response:
    body = await parse_body(request, UpdateGroup)
    return ok(group(await services(request).rbac_groups.rename(context(request), rbac_group_id, name=body.name)))


@routes.route("DELETE", BASE + "/{rbac_group_id}", permission=Permission.USERS_WRITE)
async def delete_group(request: Request, rbac_group_id: str) -> Response:
    deleted = await services(request).rbac_groups.delete(context(request), rbac_group_id)
    return ok({"id": deleted, "type": "rbac_group_deleted"})


@routes.route("GET", BASE + "/{rbac_group_id}/members", permission=Permission.USERS_READ)
async def list_members(request: Request, rbac_group_id: str) -> Response:
    q = QueryParams(request)
    result = await services(request).rbac_groups.members(
        context(request), rbac_group_id, limit=_limit(q), page=q.string("page")
    )
    return ok(render.cursor_page(result, member))


@routes.route("POST", BASE + "/{rbac_group_id}/members", permission=Permission.USERS_WRITE)
async def add_member(request: Request, rbac_group_id: str) -> Response:
    body = await parse_body(request, AddGroupMember)
    return ok(member(await services(request).rbac_groups.add_member(context(request), rbac_group_id, body.user_id)))


@routes.route("DELETE", BASE + "/{rbac_group_id}/members/{user_id}", permission=Permission.USERS_WRITE)
async def remove_member(request: Request, rbac_group_id: str, user_id: str) -> Response:
    await services(request).rbac_groups.remove_member(context(request), rbac_group_id, user_id)
    return ok({"rbac_group_id": rbac_group_id, "type": "rbac_group_member_deleted", "user_id": user_id})


@routes.route("GET", "/v1/organizations/rbac_roles", permission=Permission.USERS_READ)
async def list_roles(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).rbac_groups.list_roles(context(request), limit=_limit(q), page=q.string("page"))
    return ok(render.cursor_page(result, role))


@routes.route("GET", "/v1/organizations/rbac_roles/{rbac_role_id}", permission=Permission.USERS_READ)
async def get_role(request: Request, rbac_role_id: str) -> Response:
    return ok(role(await services(request).rbac_groups.role(context(request), rbac_role_id)))


@routes.route("GET", "/v1/organizations/rbac_roles/{rbac_role_id}/permissions", permission=Permission.USERS_READ)
async def role_permissions(request: Request, rbac_role_id: str) -> Response:
    """One ``organization`` grant naming the orgwarden role the RBAC role stands for (``role:<name>``,
    with ``workspace:<id>`` for a workspace role): what it permits is the README's role table."""
    ctx = context(request)
    found = await services(request).rbac_groups.role(ctx, rbac_role_id)
    action = f"role:{found.role}" + (f" workspace:{found.workspace_id}" if found.workspace_id else "")
    grant = {
        "action": action,
        "resource": {"organization_id": ctx.organization_id, "type": "organization"},
        "type": "rbac_role_permission",
    }
    return ok({"data": [grant], "next_page": None})
