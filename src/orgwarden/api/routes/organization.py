"""``GET /v1/organizations/me``, and orgwarden's organization settings (an extension):
``GET`` / ``POST /v1/organizations/me/settings``."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import parse_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import UpdateOrganizationSettings
from orgwarden.domain.policy import Permission

routes = AdminRouter()


@routes.route("GET", "/v1/organizations/me", permission=Permission.ORGANIZATION_READ)
async def get_me(request: Request) -> Response:
    return ok(render.organization(await services(request).organizations.get(context(request))))


@routes.route("GET", "/v1/organizations/me/settings", permission=Permission.ORGANIZATION_READ)
async def get_settings(request: Request) -> Response:
    return ok(render.organization_settings(await services(request).organizations.get(context(request))))


@routes.route("POST", "/v1/organizations/me/settings", permission=Permission.ORGANIZATION_WRITE)
async def update_settings(request: Request) -> Response:
    body = await parse_body(request, UpdateOrganizationSettings)
    org = await services(request).organizations.update_settings(
        context(request), offboarding_key_policy=body.offboarding_key_policy
    )
    return ok(render.organization_settings(org))
