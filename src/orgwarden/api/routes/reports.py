"""The usage report and the cost report (spec: "Usage Report", "Cost Report").

Array parameters are read in both spellings (``group_by[]=a`` as the SDK sends them, ``group_by=a``
by hand); the checks and the reading of the rollups are the report service's, shared with the CLI.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.params import QueryParams
from orgwarden.api.routing import AdminRouter, context, ok_fast, services
from orgwarden.domain.policy import Permission
from orgwarden.services.reports import USAGE_FILTERS

routes = AdminRouter()


def betas(request: Request) -> set[str]:
    """``anthropic-beta`` values: a comma list, the header repeated, or both."""
    return {
        beta.strip()
        for header in request.headers.getlist("anthropic-beta")
        for beta in header.split(",")
        if beta.strip()
    }


@routes.route("GET", "/v1/organizations/usage_report/messages", permission=Permission.USAGE_READ)
async def usage_report(request: Request) -> Response:
    q = QueryParams(request)
    report = await services(request).reports.usage(
        context(request),
        starting_at=q.string("starting_at"),
        ending_at=q.string("ending_at"),
        bucket_width=q.string("bucket_width"),
        group_by=q.strings("group_by"),
        filters={name: q.strings(name) for name in USAGE_FILTERS},
        limit=q.string("limit"),
        page=q.string("page"),
        betas=betas(request),
    )
    return ok_fast(report)  # no floats: orjson's bytes are the standard library's


@routes.route("GET", "/v1/organizations/cost_report", permission=Permission.USAGE_READ)
async def cost_report(request: Request) -> Response:
    q = QueryParams(request)
    report = await services(request).reports.cost(
        context(request),
        starting_at=q.string("starting_at"),
        ending_at=q.string("ending_at"),
        bucket_width=q.string("bucket_width"),
        group_by=q.strings("group_by"),
        limit=q.string("limit"),
        page=q.string("page"),
        account_ids=q.strings("account_ids"),  # extension: user-token traffic of these users
    )
    return ok_fast(report)  # no floats: orjson's bytes are the standard library's
