"""Spend limits (the SDK's ``beta.organization.spend_limits``): set (an upsert on scope and
period), list, get, delete, and the effective report. Beta headers are accepted, never required.

``/effective`` is registered before ``/{spend_limit_id}`` so that it is not read as an id.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.limit_schemas import SetSpendLimit
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.policy import Permission
from orgwarden.services.spend_limits import Scope

routes = AdminRouter()


def _limit(q: QueryParams) -> int:
    return q.integer("limit", default=20, low=1, high=1000)


@routes.route("POST", "/v1/organizations/spend_limits", permission=Permission.SPEND_LIMITS_WRITE)
async def set_spend_limit(request: Request) -> Response:
    body = await parse_body(request, SetSpendLimit)
    scope = Scope(
        body.scope.type, body.scope.workspace_id, body.scope.api_key_id, body.scope.user_id, body.scope.others()
    )
    row, _ = await services(request).spend_limits.set(
        context(request), amount=body.amount, scope=scope, period=body.period, alert_thresholds=body.alert_thresholds
    )
    return ok(render.spend_limit(row))


@routes.route("GET", "/v1/organizations/spend_limits", permission=Permission.SPEND_LIMITS_READ)
async def list_spend_limits(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).spend_limits.list(
        context(request), scope_types=q.strings("scope_type"), workspace_id=q.string("workspace_id"),
        limit=_limit(q), page=q.string("page"),
    )  # fmt: skip
    return ok(render.cursor_page(result, render.spend_limit))


@routes.route("GET", "/v1/organizations/spend_limits/effective", permission=Permission.SPEND_LIMITS_READ)
async def effective_spend_limits(request: Request) -> Response:
    """One row per (API key, period) with the binding limit and its scope's period-to-date spend."""
    q = QueryParams(request)
    result = await services(request).spend_limits.effective(
        context(request), periods=q.strings("period"), api_key_ids=q.strings("api_key_ids"),
        user_ids=q.strings("user_ids"), limit=_limit(q), page=q.string("page"),
    )  # fmt: skip
    return ok(render.cursor_page(result, render.spend_summary))


@routes.route("GET", "/v1/organizations/spend_limits/{spend_limit_id}", permission=Permission.SPEND_LIMITS_READ)
async def get_spend_limit(request: Request, spend_limit_id: str) -> Response:
    return ok(render.spend_limit(await services(request).spend_limits.get(context(request), spend_limit_id)))


@routes.route("DELETE", "/v1/organizations/spend_limits/{spend_limit_id}", permission=Permission.SPEND_LIMITS_WRITE)
async def delete_spend_limit(request: Request, spend_limit_id: str) -> Response:
    row = await services(request).spend_limits.delete(context(request), spend_limit_id)
    return ok({"id": row.id, "type": "spend_limit_deleted"})
