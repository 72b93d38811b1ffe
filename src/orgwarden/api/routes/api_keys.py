"""``/v1/organizations/api_keys``: get, list, update; and create (an extension)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import CreateApiKey, UpdateApiKey
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission

routes = AdminRouter()


@routes.route("POST", "/v1/organizations/api_keys", permission=Permission.API_KEYS_WRITE)
async def create_api_key(request: Request) -> Response:
    body = await parse_body(request, CreateApiKey)
    created = await services(request).api_keys.create(
        context(request), name=body.name, workspace_id=body.workspace_id, expires_at=body.expires_at
    )
    payload = render.api_key(created.key, created.default_workspace_id, utcnow())
    payload["key"] = created.secret  # shown once, here only
    return ok(payload)


@routes.route("GET", "/v1/organizations/api_keys", permission=Permission.API_KEYS_READ)
async def list_api_keys(request: Request) -> Response:
    q = QueryParams(request)
    ctx = context(request)
    svc = services(request).api_keys
    result = await svc.list(
        ctx,
        q.cursor(),
        workspace_id=q.string("workspace_id"),
        status=q.string("status"),
        created_by_user_id=q.string("created_by_user_id"),
    )
    default_id, now = await svc.default_workspace_id(ctx.organization_id), utcnow()
    return ok(render.page(result, lambda row: render.api_key(row, default_id, now)))


@routes.route("GET", "/v1/organizations/api_keys/{api_key_id}", permission=Permission.API_KEYS_READ)
async def get_api_key(request: Request, api_key_id: str) -> Response:
    ctx = context(request)
    svc = services(request).api_keys
    key = await svc.get(ctx, api_key_id)
    return ok(render.api_key(key, await svc.default_workspace_id(ctx.organization_id), utcnow()))


@routes.route("POST", "/v1/organizations/api_keys/{api_key_id}", permission=Permission.API_KEYS_WRITE)
async def update_api_key(request: Request, api_key_id: str) -> Response:
    body = await parse_body(request, UpdateApiKey)
    ctx = context(request)
    svc = services(request).api_keys
    key = await svc.update(ctx, api_key_id, name=body.name, status=body.status)
    return ok(render.api_key(key, await svc.default_workspace_id(ctx.organization_id), utcnow()))
