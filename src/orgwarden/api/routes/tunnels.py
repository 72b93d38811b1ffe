"""MCP tunnels and their certificates, under two path families that share every use case.

* ``/v1/organizations/tunnels...``: the spec's, beta ``mcp-tunnels-2026-05-19``, organization-wide
  (list filters with ``workspace_id``); create is an orgwarden extension there, and so is
  ``POST /v1/organizations/tunnels/check_token``.
* ``/v1/tunnels...``: the SDK's ``client.beta.tunnels``, beta ``mcp-tunnels-2026-06-22``, limited to the
  workspace that ``anthropic-workspace-id`` names (the default workspace without it).

Each family requires its own beta: without it, a 400 that names it. Reveal, rotate and archive are
POSTs, so a token never appears in a URL or an access log.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import tunnel_render as render
from orgwarden.api.params import QueryParams, parse_body, parse_optional_body
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.api.tunnel_schemas import (
    CheckTunnelToken,
    CreateOrganizationTunnel,
    CreateTunnel,
    CreateTunnelCertificate,
    RotateTunnelToken,
)
from orgwarden.domain.policy import Permission
from orgwarden.domain.tunnels import SDK_BETA, SPEC_BETA
from orgwarden.errors import InvalidRequest
from orgwarden.services.tunnels import ORGANIZATION, WORKSPACE_HEADER, Reach

routes = AdminRouter()
READ, WRITE = Permission.TUNNELS_READ, Permission.TUNNELS_WRITE


@dataclass(frozen=True, slots=True)
class Family:
    prefix: str
    beta: str
    scoped: bool  # the workspace comes from anthropic-workspace-id

    def reach(self, request: Request) -> Reach:
        """Checks the beta header, then says which tunnels this call may see."""
        sent = {
            beta.strip()
            for header in request.headers.getlist("anthropic-beta")
            for beta in header.split(",")
            if beta.strip()
        }
        if self.beta not in sent:
            other = next((f for f in FAMILIES if f is not self and f.beta in sent), None)
            hint = f" ({other.beta} is the beta of {other.prefix})" if other else ""
            raise InvalidRequest(f"{request.url.path} requires the anthropic-beta header {self.beta}{hint}")
        if not self.scoped:
            return ORGANIZATION
        return Reach(scoped=True, workspace_header=request.headers.get(WORKSPACE_HEADER))


SPEC = Family("/v1/organizations/tunnels", SPEC_BETA, scoped=False)
SDK = Family("/v1/tunnels", SDK_BETA, scoped=True)
FAMILIES = (SPEC, SDK)


def _limit(q: QueryParams) -> int:
    return q.integer("limit", default=20, low=1, high=1000)


def register(family: Family) -> None:
    prefix = family.prefix
    one = prefix + "/{tunnel_id}"
    certificates = one + "/certificates"

    @routes.route("POST", prefix, permission=WRITE)
    async def create_tunnel(request: Request) -> Response:
        reach = family.reach(request)
        if family.scoped:
            body = await parse_optional_body(request, CreateTunnel)
            workspace_id = None
        else:
            spec_body = await parse_optional_body(request, CreateOrganizationTunnel)
            body, workspace_id = spec_body, spec_body.workspace_id
        created = await services(request).tunnels.create(
            context(request), reach, display_name=body.display_name, workspace_id=workspace_id
        )
        return ok(render.tunnel(created))

    @routes.route("GET", prefix, permission=READ)
    async def list_tunnels(request: Request) -> Response:
        reach = family.reach(request)
        q = QueryParams(request)
        result = await services(request).tunnels.list(
            context(request), reach, workspace_id=None if family.scoped else q.string("workspace_id"),
            include_archived=q.boolean("include_archived"), limit=_limit(q), page=q.string("page"),
        )  # fmt: skip
        return ok({"data": [render.tunnel(item) for item in result.items], "next_page": result.next_page})

    @routes.route("GET", one, permission=READ)
    async def get_tunnel(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        return ok(render.tunnel(await services(request).tunnels.get(context(request), reach, tunnel_id)))

    @routes.route("POST", one + "/reveal_token", permission=WRITE)
    async def reveal_tunnel_token(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        token = await services(request).tunnels.reveal_token(context(request), reach, tunnel_id)
        return ok(render.tunnel_token(token))

    @routes.route("POST", one + "/rotate_token", permission=WRITE)
    async def rotate_tunnel_token(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        body = await parse_optional_body(request, RotateTunnelToken)
        token = await services(request).tunnels.rotate_token(context(request), reach, tunnel_id, reason=body.reason)
        return ok(render.tunnel_token(token))

    @routes.route("POST", one + "/archive", permission=WRITE)
    async def archive_tunnel(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        return ok(render.tunnel(await services(request).tunnels.archive(context(request), reach, tunnel_id)))

    @routes.route("POST", certificates, permission=WRITE)
    async def create_tunnel_certificate(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        body = await parse_body(request, CreateTunnelCertificate)
        row = await services(request).tunnel_certificates.create(
            context(request), reach, tunnel_id, body.ca_certificate_pem
        )
        return ok(render.tunnel_certificate(row))

    @routes.route("GET", certificates, permission=READ)
    async def list_tunnel_certificates(request: Request, tunnel_id: str) -> Response:
        reach = family.reach(request)
        q = QueryParams(request)
        result = await services(request).tunnel_certificates.list(
            context(request), reach, tunnel_id, include_archived=q.boolean("include_archived"), limit=_limit(q),
            page=q.string("page"),
        )  # fmt: skip
        return ok({"data": [render.tunnel_certificate(row) for row in result.items], "next_page": result.next_page})

    @routes.route("GET", certificates + "/{certificate_id}", permission=READ)
    async def get_tunnel_certificate(request: Request, tunnel_id: str, certificate_id: str) -> Response:
        reach = family.reach(request)
        row = await services(request).tunnel_certificates.get(context(request), reach, tunnel_id, certificate_id)
        return ok(render.tunnel_certificate(row))

    @routes.route("POST", certificates + "/{certificate_id}/archive", permission=WRITE)
    async def archive_tunnel_certificate(request: Request, tunnel_id: str, certificate_id: str) -> Response:
        reach = family.reach(request)
        row = await services(request).tunnel_certificates.archive(context(request), reach, tunnel_id, certificate_id)
        return ok(render.tunnel_certificate(row))


@routes.route("POST", SPEC.prefix + "/check_token", permission=READ)
async def check_tunnel_token(request: Request) -> Response:
    """Extension: does this token open a live tunnel now? For a connector gateway that authenticates
    connectors against orgwarden, and to show that rotation and archive retire a token."""
    SPEC.reach(request)
    body = await parse_body(request, CheckTunnelToken)
    return ok(
        render.tunnel_token_check(await services(request).tunnels.check_token(context(request), body.tunnel_token))
    )


for _family in FAMILIES:
    register(_family)
