"""Rate limits: the organization's entries, workspace overrides (the spec and the SDK), and two
orgwarden extensions: writing the organization's values, and per-API-key values.

Lists page with ``page`` / ``next_page``; ``limit`` omitted returns every entry in one page, as
Anthropic's do. Query parameters the SDK adds on beta resources (``beta=true``) are ignored.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.limit_schemas import SetRateLimits
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.policy import Permission
from orgwarden.services.rate_limits import LimitChange

routes = AdminRouter()


def page_size(q: QueryParams) -> int | None:
    """``limit``: 1 to 1000; omitted means every entry in one page."""
    if q.string("limit") is None:
        return None
    return q.integer("limit", default=1000, low=1, high=1000)


async def _changes(request: Request) -> list[LimitChange]:
    body = await parse_body(request, SetRateLimits)
    return [LimitChange(item.type, item.value) for item in body.limits]


@routes.route("GET", "/v1/organizations/rate_limits", permission=Permission.RATE_LIMITS_READ)
async def list_rate_limits(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).rate_limits.list_organization(
        context(request), group_type=q.string("group_type"), model=q.string("model"), limit=page_size(q),
        page=q.string("page"),
    )  # fmt: skip
    return ok(render.cursor_page(result, render.rate_limit))


@routes.route("POST", "/v1/organizations/rate_limits/{rate_limit_id}", permission=Permission.RATE_LIMITS_WRITE)
async def set_organization_rate_limits(request: Request, rate_limit_id: str) -> Response:
    """Extension: set or clear the organization's own values for one group."""
    changes = await _changes(request)
    entry = await services(request).rate_limits.update(context(request), "organization", None, rate_limit_id, changes)
    return ok(render.rate_limit(entry))


@routes.route("GET", "/v1/organizations/workspaces/{workspace_id}/rate_limits", permission=Permission.RATE_LIMITS_READ)
async def list_workspace_rate_limits(request: Request, workspace_id: str) -> Response:
    q = QueryParams(request)
    result = await services(request).rate_limits.list_workspace(
        context(request), workspace_id, group_type=q.string("group_type"),
        include_inherited=q.boolean("include_inherited"), limit=page_size(q), page=q.string("page"),
    )  # fmt: skip
    return ok(render.cursor_page(result, render.workspace_rate_limit))


@routes.route(
    "POST",
    "/v1/organizations/workspaces/{workspace_id}/rate_limits/{rate_limit_id}",
    permission=Permission.RATE_LIMITS_WRITE,
)
async def set_workspace_rate_limits(request: Request, workspace_id: str, rate_limit_id: str) -> Response:
    changes = await _changes(request)
    entry = await services(request).rate_limits.update(
        context(request), "workspace", workspace_id, rate_limit_id, changes
    )
    return ok(render.workspace_rate_limit(entry))


@routes.route("GET", "/v1/organizations/api_keys/{api_key_id}/rate_limits", permission=Permission.RATE_LIMITS_READ)
async def list_api_key_rate_limits(request: Request, api_key_id: str) -> Response:
    """Extension: the groups for which an API key has values of its own."""
    q = QueryParams(request)
    result = await services(request).rate_limits.list_api_key(
        context(request), api_key_id, group_type=q.string("group_type"), limit=page_size(q), page=q.string("page")
    )
    return ok(render.cursor_page(result, render.api_key_rate_limit))


@routes.route(
    "POST",
    "/v1/organizations/api_keys/{api_key_id}/rate_limits/{rate_limit_id}",
    permission=Permission.RATE_LIMITS_WRITE,
)
async def set_api_key_rate_limits(request: Request, api_key_id: str, rate_limit_id: str) -> Response:
    """Extension: set or clear an API key's own values for one group."""
    changes = await _changes(request)
    entry = await services(request).rate_limits.update(context(request), "api_key", api_key_id, rate_limit_id, changes)
    return ok(render.api_key_rate_limit(entry))
