"""``GET /v1/organizations/me``."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.policy import Permission

routes = AdminRouter()


@routes.route("GET", "/v1/organizations/me", permission=Permission.ORGANIZATION_READ)
async def get_me(request: Request) -> Response:
    return ok(render.organization(await services(request).organizations.get(context(request))))
