"""``/v1/organizations/workspaces``: create, get, list, update, archive."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body, parse_optional_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.schemas import CreateWorkspace, Empty, ResidencyIn, UpdateWorkspace, UpstreamKey
from orgwarden.domain.policy import Permission
from orgwarden.services.workspaces import Residency

routes = AdminRouter()


def _fields(body: CreateWorkspace | UpdateWorkspace) -> dict[str, Any]:
    """The body as the service's keyword arguments (both create and update take the same ones)."""
    fields = {name: getattr(body, name) for name in type(body).model_fields if name != "data_residency"}
    residency: ResidencyIn | None = body.data_residency
    if residency is not None:
        fields["residency"] = Residency(
            residency.workspace_geo, residency.allowed_inference_geos, residency.default_inference_geo
        )
    return fields


@routes.route("POST", "/v1/organizations/workspaces", permission=Permission.WORKSPACES_CREATE)
async def create_workspace(request: Request) -> Response:
    body = await parse_body(request, CreateWorkspace)
    created = await services(request).workspaces.create(context(request), **_fields(body))
    return ok(render.workspace(created))


@routes.route("GET", "/v1/organizations/workspaces", permission=Permission.WORKSPACES_READ)
async def list_workspaces(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).workspaces.list(
        context(request),
        q.cursor(),
        include_archived=q.boolean("include_archived"),
        include_default=q.boolean("include_default"),
        ids_filter=q.strings("ids"),
    )
    return ok(render.page(result, render.workspace))


@routes.route("GET", "/v1/organizations/workspaces/{workspace_id}", permission=Permission.WORKSPACES_READ)
async def get_workspace(request: Request, workspace_id: str) -> Response:
    return ok(render.workspace(await services(request).workspaces.get(context(request), workspace_id)))


@routes.route("POST", "/v1/organizations/workspaces/{workspace_id}", permission=Permission.WORKSPACES_WRITE)
async def update_workspace(request: Request, workspace_id: str) -> Response:
    body = await parse_body(request, UpdateWorkspace)
    updated = await services(request).workspaces.update(context(request), workspace_id, **_fields(body))
    return ok(render.workspace(updated))


@routes.route("POST", "/v1/organizations/workspaces/{workspace_id}/archive", permission=Permission.WORKSPACES_ARCHIVE)
async def archive_workspace(request: Request, workspace_id: str) -> Response:
    await parse_optional_body(request, Empty)
    return ok(render.workspace(await services(request).workspaces.archive(context(request), workspace_id)))


def _upstream_state(workspace_id: str, configured: bool) -> dict[str, Any]:
    return {"type": "workspace_upstream_key", "workspace_id": workspace_id, "configured": configured}


@routes.route(
    "POST", "/v1/organizations/workspaces/{workspace_id}/upstream_key", permission=Permission.WORKSPACES_WRITE
)
async def set_upstream_key(request: Request, workspace_id: str) -> Response:
    """Extension: the workspace's own upstream API key (write-only, stored encrypted)."""
    body = await parse_body(request, UpstreamKey)
    await services(request).workspaces.set_upstream_key(context(request), workspace_id, body.api_key)
    return ok(_upstream_state(workspace_id, True))


@routes.route(
    "DELETE", "/v1/organizations/workspaces/{workspace_id}/upstream_key", permission=Permission.WORKSPACES_WRITE
)
async def clear_upstream_key(request: Request, workspace_id: str) -> Response:
    """Extension: forget the workspace's upstream key; it falls back to the server's."""
    await services(request).workspaces.set_upstream_key(context(request), workspace_id, None)
    return ok(_upstream_state(workspace_id, False))
