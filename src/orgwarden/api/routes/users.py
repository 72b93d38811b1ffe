"""``/v1/organizations/users``: get, list (email and roles filters), update role, remove."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import UpdateUser
from orgwarden.domain.policy import Permission

routes = AdminRouter()


@routes.route("GET", "/v1/organizations/users", permission=Permission.USERS_READ)
async def list_users(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).users.list(
        context(request), q.cursor(), email=q.string("email"), roles=q.strings("roles")
    )
    return ok(render.page(result, render.user))


@routes.route("GET", "/v1/organizations/users/{user_id}", permission=Permission.USERS_READ)
async def get_user(request: Request, user_id: str) -> Response:
    return ok(render.user(await services(request).users.get(context(request), user_id)))


@routes.route("POST", "/v1/organizations/users/{user_id}", permission=Permission.USERS_WRITE)
async def update_user(request: Request, user_id: str) -> Response:
    body = await parse_body(request, UpdateUser)
    return ok(render.user(await services(request).users.update_role(context(request), user_id, body.role)))


@routes.route("DELETE", "/v1/organizations/users/{user_id}", permission=Permission.USERS_WRITE)
async def remove_user(request: Request, user_id: str) -> Response:
    removed = await services(request).users.remove(context(request), user_id)
    return ok({"id": removed, "type": "user_deleted"})
