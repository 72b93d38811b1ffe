"""MCP tunnels in the console: list, create, one tunnel with its certificates, token reveal and
rotation, archive (tunnel or certificate) behind a confirm page.

The handlers call the tunnel services the Admin API's organization-wide family
(``/v1/organizations/tunnels``) calls, with the whole-organization reach, so the events they write
are the API's (``tunnel.create``, ``tunnel.token.reveal``, ...). Every member may look
(``tunnels:read``); changing or revealing needs ``tunnels:write`` (organization admins): the
controls are left out for others, and their POSTs are refused by the page guard all the same.

A token is shown once, in the answer to the POST that revealed or rotated it (never in a URL).
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from orgwarden.api.routing import services
from orgwarden.console import render as view
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.console.render import render
from orgwarden.domain.policy import Permission, may_use
from orgwarden.domain.tunnels import MAX_CERTIFICATES
from orgwarden.errors import InvalidRequest
from orgwarden.services.tunnels import ORGANIZATION
from orgwarden.storage.pagination import Cursor

routes = ConsolePages()
READ: Final = Permission.TUNNELS_READ
WRITE: Final = Permission.TUNNELS_WRITE
PAGE_SIZE: Final = 50
MAX_WORKSPACES_LISTED: Final = 200

NOTICES: Final = {
    "tunnel_created": "Tunnel created. Reveal its token below to configure the connector.",
    "tunnel_archived": "Tunnel archived: its token no longer opens it and its certificates were archived.",
    "certificate_added": "Certificate added.",
    "certificate_archived": "Certificate archived: it is no longer trusted for this tunnel.",
}
view.notices(NOTICES)


def _page(request: Request) -> str | None:
    value = request.query_params.get("page", "")
    if len(value) > 200:
        raise InvalidRequest("page: longer than 200 characters")
    return value or None


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _field(form: Form, name: str) -> str | None:
    """A form field, ``None`` when left empty (the service's "not given")."""
    value = form.get(name, "").strip()
    return value or None


@routes.page("GET", "/console/tunnels", permission=READ, nav="MCP tunnels")
async def tunnels(request: Request, who: Viewer) -> Response:
    """Newest first; ``include_archived=true`` shows archived ones too. Admins get the create form."""
    archived = request.query_params.get("include_archived", "") == "true"
    result = await services(request).tunnels.list(
        who.context, ORGANIZATION, include_archived=archived, limit=PAGE_SIZE, page=_page(request)
    )
    may_write = may_use(who.context.actor, WRITE)
    workspaces = []
    if may_write:
        listed = await services(request).workspaces.list(who.context, Cursor(limit=MAX_WORKSPACES_LISTED))
        workspaces = list(listed.items)
    return render(
        request, who, "tunnels.html", title="MCP tunnels", tunnels=result.items, next_page=result.next_page,
        include_archived=archived, may_write=may_write, workspaces=workspaces,
    )  # fmt: skip


@routes.action("POST", "/console/tunnels", permission=WRITE)
async def create(request: Request, who: Viewer, form: Form) -> Response:
    """A new tunnel (``tunnel.create``); then its page."""
    created = await services(request).tunnels.create(
        who.context, ORGANIZATION, display_name=_field(form, "display_name"), workspace_id=_field(form, "workspace_id")
    )
    return _see_other(f"/console/tunnels/{created.tunnel.id}?notice=tunnel_created")


@routes.page("GET", "/console/tunnels/{tunnel_id}", permission=READ)
async def tunnel(request: Request, who: Viewer, tunnel_id: str) -> Response:
    """The tunnel, its certificates (archived ones included, marked) and, for admins, its controls."""
    shown = await services(request).tunnels.get(who.context, ORGANIZATION, tunnel_id)
    certificates = await services(request).tunnel_certificates.list(
        who.context, ORGANIZATION, tunnel_id, include_archived=True, limit=100
    )
    return render(
        request, who, "tunnel.html", title=shown.tunnel.display_name or shown.tunnel.domain, shown=shown,
        certificates=certificates.items, may_write=may_use(who.context.actor, WRITE),
        may_audit=may_use(who.context.actor, Permission.AUDIT_READ), max_certificates=MAX_CERTIFICATES,
    )  # fmt: skip


async def _token_page(request: Request, who: Viewer, tunnel_id: str, token: object, rotated: bool) -> Response:
    shown = await services(request).tunnels.get(who.context, ORGANIZATION, tunnel_id)
    return render(request, who, "tunnels_token.html", title="Tunnel token", shown=shown, token=token, rotated=rotated)


@routes.action("POST", "/console/tunnels/{tunnel_id}/reveal", permission=WRITE)
async def reveal(request: Request, who: Viewer, form: Form, tunnel_id: str) -> Response:
    """The current token, in this answer only (audited ``tunnel.token.reveal`` by the service)."""
    token = await services(request).tunnels.reveal_token(who.context, ORGANIZATION, tunnel_id)
    return await _token_page(request, who, tunnel_id, token, rotated=False)


@routes.page("GET", "/console/tunnels/{tunnel_id}/rotate", permission=WRITE)
async def rotate_confirm(request: Request, who: Viewer, tunnel_id: str) -> Response:
    shown = await services(request).tunnels.get(who.context, ORGANIZATION, tunnel_id)
    return render(request, who, "tunnels_rotate.html", title="Rotate the tunnel token", shown=shown)


@routes.action("POST", "/console/tunnels/{tunnel_id}/rotate", permission=WRITE)
async def rotate(request: Request, who: Viewer, form: Form, tunnel_id: str) -> Response:
    """A fresh token, shown once; the previous one stops opening the tunnel (``tunnel.token.rotate``)."""
    token = await services(request).tunnels.rotate_token(
        who.context, ORGANIZATION, tunnel_id, reason=_field(form, "reason")
    )
    return await _token_page(request, who, tunnel_id, token, rotated=True)


@routes.page("GET", "/console/tunnels/{tunnel_id}/archive", permission=WRITE)
async def archive_confirm(request: Request, who: Viewer, tunnel_id: str) -> Response:
    shown = await services(request).tunnels.get(who.context, ORGANIZATION, tunnel_id)
    certificates = await services(request).tunnel_certificates.list(who.context, ORGANIZATION, tunnel_id, limit=100)
    return render(
        request, who, "tunnels_archive.html", title="Archive the tunnel", shown=shown,
        certificates=certificates.items,
    )  # fmt: skip


@routes.action("POST", "/console/tunnels/{tunnel_id}/archive", permission=WRITE)
async def archive(request: Request, who: Viewer, form: Form, tunnel_id: str) -> Response:
    """Irreversible: the token is forgotten, the certificates archived (``tunnel.archive``)."""
    await services(request).tunnels.archive(who.context, ORGANIZATION, tunnel_id)
    return _see_other(f"/console/tunnels/{tunnel_id}?notice=tunnel_archived")


@routes.action("POST", "/console/tunnels/{tunnel_id}/certificates", permission=WRITE)
async def add_certificate(request: Request, who: Viewer, form: Form, tunnel_id: str) -> Response:
    """A CA certificate (PEM) the tunnel's data plane would trust (``tunnel_certificate.create``)."""
    pem = form.get("ca_certificate_pem", "")
    if not pem.strip():
        raise InvalidRequest("ca_certificate_pem: paste a PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    await services(request).tunnel_certificates.create(who.context, ORGANIZATION, tunnel_id, pem)
    return _see_other(f"/console/tunnels/{tunnel_id}?notice=certificate_added")


@routes.page("GET", "/console/tunnels/{tunnel_id}/certificates/{certificate_id}/archive", permission=WRITE)
async def archive_certificate_confirm(request: Request, who: Viewer, tunnel_id: str, certificate_id: str) -> Response:
    shown = await services(request).tunnels.get(who.context, ORGANIZATION, tunnel_id)
    certificate = await services(request).tunnel_certificates.get(who.context, ORGANIZATION, tunnel_id, certificate_id)
    return render(
        request, who, "tunnels_certificate_archive.html", title="Archive the certificate", shown=shown,
        certificate=certificate,
    )  # fmt: skip


@routes.action("POST", "/console/tunnels/{tunnel_id}/certificates/{certificate_id}/archive", permission=WRITE)
async def archive_certificate(
    request: Request, who: Viewer, form: Form, tunnel_id: str, certificate_id: str
) -> Response:
    """Takes the certificate out of the trusted set (``tunnel_certificate.archive``); the record stays."""
    await services(request).tunnel_certificates.archive(who.context, ORGANIZATION, tunnel_id, certificate_id)
    return _see_other(f"/console/tunnels/{tunnel_id}?notice=certificate_archived")
