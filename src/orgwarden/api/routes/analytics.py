"""The SDK's analytics paths (``client.organization.analytics``, ``client.beta.organization.analytics``).

Served from the usage rollups and Claude Code's telemetry (``services.analytics``,
``services.analytics_activity``): usage, cost, their per-user forms, the Enterprise bucketed reports,
daily summaries and per-user activity. The paths about claude.ai data orgwarden never sees (apps,
artifacts, connectors, plugins, skills, projects) answer 404 ``not_found_error`` naming the path,
after the credential and its permission are checked like every report's.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.params import QueryParams
from orgwarden.api.routing import AdminRouter, context, ok_fast, services
from orgwarden.domain.policy import Permission
from orgwarden.errors import NotFound
from orgwarden.services.analytics import API_FILTERS, ENTERPRISE_FILTERS, AnalyticsService, Query
from orgwarden.services.analytics_activity import ActivityService

routes = AdminRouter()
BASE = "/v1/organizations/analytics"
NOT_RECORDED = {
    "apps/chat/projects": "claude.ai chat projects",
    "artifacts": "claude.ai artifacts",
    "connectors": "connector use",
    "plugins": "plugin use",
    "skills": "skill use",
    "projects": "Claude Code session projects",
}


def analytics(request: Request) -> AnalyticsService:
    return services(request).analytics


def activity(request: Request) -> ActivityService:
    return services(request).activity


def _query(request: Request, filters: tuple[str, ...], width: str) -> Query:
    q = QueryParams(request)
    return Query(
        starting_at=q.string("starting_at"),
        ending_at=q.string("ending_at"),
        bucket_width=q.string(width),
        group_by=q.strings("group_by"),
        filters={name: q.strings(name, allow_empty=name == "api_key_ids") for name in filters},
        limit=q.string("limit"),
        page=q.string("page"),
        order=q.string("order"),
        order_by=q.string("order_by"),
        exclude_deleted_users=q.boolean("exclude_deleted_users"),
    )


@routes.route("GET", f"{BASE}/usage_report", permission=Permission.USAGE_READ)
async def usage_report(request: Request) -> Response:
    query = _query(request, ENTERPRISE_FILTERS, "bucket_width")
    return ok_fast(await analytics(request).usage_report(context(request), query))


@routes.route("GET", f"{BASE}/cost_report", permission=Permission.USAGE_READ)
async def cost_report(request: Request) -> Response:
    query = _query(request, ENTERPRISE_FILTERS, "bucket_width")
    return ok_fast(await analytics(request).cost_report(context(request), query))


@routes.route("GET", f"{BASE}/usage", permission=Permission.USAGE_READ)
async def usage(request: Request) -> Response:
    query = _query(request, API_FILTERS, "time_bucket_width")
    return ok_fast(await analytics(request).usage(context(request), query))


@routes.route("GET", f"{BASE}/cost", permission=Permission.USAGE_READ)
async def cost(request: Request) -> Response:
    query = _query(request, API_FILTERS, "time_bucket_width")
    return ok_fast(await analytics(request).cost(context(request), query))


@routes.route("GET", f"{BASE}/user_usage_report", permission=Permission.USAGE_READ)
async def user_usage_report(request: Request) -> Response:
    query = _query(request, ENTERPRISE_FILTERS, "bucket_width")
    return ok_fast(await analytics(request).user_usage_report(context(request), query))


@routes.route("GET", f"{BASE}/user_cost_report", permission=Permission.USAGE_READ)
async def user_cost_report(request: Request) -> Response:
    query = _query(request, ENTERPRISE_FILTERS, "bucket_width")
    return ok_fast(await analytics(request).user_cost_report(context(request), query))


@routes.route("GET", f"{BASE}/summaries", permission=Permission.USAGE_READ)
async def summaries(request: Request) -> Response:
    q = QueryParams(request)
    result = await activity(request).summaries(
        context(request),
        starting_date=q.string("starting_date"),
        ending_date=q.string("ending_date"),
        filters=q.strings("filter"),
        limit=q.string("limit"),
        page=q.string("page"),
    )
    return ok_fast(result)


@routes.route("GET", f"{BASE}/users", permission=Permission.USAGE_READ)
async def users(request: Request) -> Response:
    q = QueryParams(request)
    result = await activity(request).users(
        context(request),
        day=q.string("date"),
        starting_date=q.string("starting_date"),
        ending_date=q.string("ending_date"),
        filters=q.strings("filter"),
        group_by=q.strings("group_by"),
        limit=q.string("limit"),
        order=q.string("order"),
        order_by=q.string("order_by"),
        page=q.string("page"),
    )
    return ok_fast(result)


def _not_recorded(path: str, what: str) -> None:
    async def refuse(request: Request) -> Response:
        raise NotFound(f"GET {BASE}/{path}: orgwarden records no {what}, so it does not serve this report")

    refuse.__name__ = f"not_recorded_{path.replace('/', '_')}"
    routes.route("GET", f"{BASE}/{path}", permission=Permission.USAGE_READ)(refuse)


for _path, _what in NOT_RECORDED.items():
    _not_recorded(_path, _what)
