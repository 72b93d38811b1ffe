"""``/v1/organizations/invites`` and the accept extension (``POST /v1/invites/accept``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams, parse_body
from orgwarden.api.routing import AdminRouter, attempt, context, ok, services, source_ip, tenant_guard
from orgwarden.api.schemas import AcceptInvite, CreateInvite
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission
from orgwarden.gateway.restriction import Caller

routes = AdminRouter()
public = APIRouter()


def _base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_url
    return configured or str(request.base_url).rstrip("/")


@routes.route("POST", "/v1/organizations/invites", permission=Permission.INVITES_WRITE)
async def create_invite(request: Request) -> Response:
    body = await parse_body(request, CreateInvite)
    created = await services(request).invites.create(
        context(request), email=body.email, role=body.role, rbac_group_ids=body.rbac_group_ids or ()
    )
    groups = await services(request).invites.group_ids([created.invite.id])
    payload = render.invite(created.invite, utcnow(), groups.get(created.invite.id, []))
    # The token travels in the fragment, which browsers never send to a server (so no access log has it).
    payload["accept_url"] = f"{_base_url(request)}/invites/accept#token={created.token}"
    return ok(payload)


@routes.route("GET", "/v1/organizations/invites", permission=Permission.INVITES_READ)
async def list_invites(request: Request) -> Response:
    q = QueryParams(request)
    result = await services(request).invites.list(
        context(request),
        q.cursor(),
        email=q.string("email"),
        roles=q.strings("roles"),
        statuses=q.strings("statuses"),
    )
    now = utcnow()
    groups = await services(request).invites.group_ids([row.id for row in result.items])
    return ok(render.page(result, lambda row: render.invite(row, now, groups.get(row.id, []))))


@routes.route("GET", "/v1/organizations/invites/{invite_id}", permission=Permission.INVITES_READ)
async def get_invite(request: Request, invite_id: str) -> Response:
    row = await services(request).invites.get(context(request), invite_id)
    groups = await services(request).invites.group_ids([row.id])
    return ok(render.invite(row, utcnow(), groups.get(row.id, [])))


@routes.route("DELETE", "/v1/organizations/invites/{invite_id}", permission=Permission.INVITES_WRITE)
async def delete_invite(request: Request, invite_id: str) -> Response:
    deleted = await services(request).invites.delete(context(request), invite_id)
    return ok({"id": deleted, "type": "invite_deleted"})


@public.post("/v1/invites/accept")
async def accept_invite(request: Request) -> Response:
    """Extension: authenticated by the invite's token alone; returns the new User. Joining the
    organization is an access to it: the tenant restriction applies, as on every other route."""
    tenant = tenant_guard(request)
    tried = attempt(request, "invite_token")
    allowed = await tenant.allowed_org_ids(request.headers.raw, tried)
    if (organization_id := tenant.installation()) is not None:
        await tenant.enforce(allowed, tried, Caller(organization_id, "anonymous", "invite_token"))
    body = await parse_body(request, AcceptInvite)
    new_user = await services(request).invites.accept(
        token=body.token, name=body.name, request_id=request.state.request_id, source_ip=source_ip(request)
    )
    return ok(render.user(new_user))


_ACCEPT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Join the organization · orgwarden</title>
<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
input,button{font:inherit;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}</style></head>
<body><h1>Accept your invitation</h1>
<form id="f"><label for="n">Your name</label><input id="n" required maxlength="255">
<button>Join</button></form><p id="out" role="status"></p>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token");
document.getElementById("f").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/invites/accept", {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({token, name: document.getElementById("n").value})});
  const j = await r.json();
  document.getElementById("out").textContent = r.ok ? `Welcome, ${j.name}: you joined as ${j.role}.`
                                                   : j.error.message;
});
</script></body></html>"""


@public.get("/invites/accept")
async def accept_page() -> Response:
    """A minimal page for the link in ``accept_url``; it posts to ``/v1/invites/accept``."""
    return HTMLResponse(_ACCEPT_PAGE)
