"""Console: rate and spend limits — the organization's page, and the limit forms of a workspace.

``/console/limits`` shows the organization's rate limits per group (set or cleared per limiter
type: an orgwarden extension, as on ``POST /v1/organizations/rate_limits/{id}``), its spend limits
and every user's spend limit. A workspace's page posts its own rate and spend limits here too. Each
change is ``RateLimitService.update`` or ``SpendLimitService.set`` / ``delete`` with the viewer's
context, exactly as the Admin API; a refused form (400) re-renders its page with the message and
the input kept. Deleting a spend limit asks for confirmation first.
"""

from __future__ import annotations

from typing import Final

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.routing import services
from orgwarden.console import limit_views, render
from orgwarden.console import settings_fields as fields
from orgwarden.console.pages import ConsolePages, Form, Viewer
from orgwarden.console.workspaces import Errors, Values, redirect, user_directory, user_id_named, workspace_page
from orgwarden.domain import policy
from orgwarden.domain.policy import Permission
from orgwarden.errors import InvalidRequest, NotFound, PermissionDenied
from orgwarden.services.spend_limits import Scope

routes = ConsolePages()
router = routes.router

NOTICES: Final = {
    "rate_limits_saved": "Rate limits saved. The gateway applies them within a second.",
    "spend_limit_saved": "Spend limit saved. The gateway applies it within a second.",
    "spend_limit_deleted": "Spend limit deleted.",
}
render.notices(NOTICES)


# -- the organization's page -----------------------------------------------------------------------


@routes.page("GET", "/console/limits", permission=Permission.RATE_LIMITS_READ, nav="Limits")
async def limits_page(request: Request, who: Viewer) -> Response:
    return await _page(request, who)


async def _page(
    request: Request, who: Viewer, *, status: int = 200, errors: Errors | None = None, values: Values | None = None
) -> Response:
    svc = services(request)
    actor = who.context.actor
    rate_rows, rate_refusal = None, None
    try:
        rate_rows = await limit_views.organization_rate_rows(svc, who)
    except PermissionDenied as exc:  # a workspace role only: their workspaces' pages show theirs
        rate_refusal = exc.message
    org_spend = user_spend = None
    users = {}
    if limit_views.may_spend(who):
        users = await user_directory(svc, who)
        labels = {uid: user.email for uid, user in users.items()}
        org_spend = await limit_views.spend_rows(svc, who, "organization")
        user_spend = await limit_views.spend_rows(svc, who, "user", labels=labels)
    return render.render(
        request, who, "limits.html", status=status, title="Limits",
        rate_rows=rate_rows, rate_refusal=rate_refusal, limiters=limit_views.LIMITERS,
        may_rate_write=policy.allows(actor, Permission.RATE_LIMITS_WRITE),
        org_spend=org_spend, user_spend=user_spend,
        may_spend_write=limit_views.may_spend(who, Permission.SPEND_LIMITS_WRITE),
        users=sorted(users.values(), key=lambda u: u.email), periods=limit_views.PERIOD_CHOICES,
        errors=errors or {}, values=values or {},
    )  # fmt: skip


@routes.action("POST", "/console/limits/rate/{rate_limit_id}", permission=Permission.RATE_LIMITS_WRITE)
async def set_organization_rate_limits(request: Request, who: Viewer, form: Form, rate_limit_id: str) -> Response:
    key = f"rate:{rate_limit_id}"
    try:
        changes = fields.rate_changes(form)
        await services(request).rate_limits.update(who.context, "organization", None, rate_limit_id, changes)
    except InvalidRequest as exc:
        return await _page(request, who, status=400, errors={key: exc.message}, values={key: form})
    return redirect(f"/console/limits?notice=rate_limits_saved#rate-{rate_limit_id}")


@routes.action("POST", "/console/limits/spend", permission=Permission.SPEND_LIMITS_WRITE)
async def set_organization_spend_limit(request: Request, who: Viewer, form: Form) -> Response:
    """``scope=organization``, or ``scope=user`` with ``user`` (an email address or a user id)."""
    svc = services(request)
    section = "user_spend" if form.get("scope") == "user" else "org_spend"
    try:
        if section == "user_spend":
            scope = Scope("user", user_id=await user_id_named(svc, who, fields.text(form, "user")))
        else:
            scope = Scope("organization")
        await limit_views.set_spend(svc, who, form, scope)
    except (InvalidRequest, NotFound) as exc:
        return await _page(request, who, status=400, errors={section: exc.message}, values={section: form})
    return redirect(f"/console/limits?notice=spend_limit_saved#{section}")


# -- a workspace's limits ---------------------------------------------------------------------------


@routes.action(
    "POST", "/console/workspaces/{workspace_id}/rate-limits/{rate_limit_id}", permission=Permission.RATE_LIMITS_WRITE
)
async def set_workspace_rate_limits(
    request: Request, who: Viewer, form: Form, workspace_id: str, rate_limit_id: str
) -> Response:
    key = f"rate:{rate_limit_id}"
    try:
        changes = fields.rate_changes(form)
        await services(request).rate_limits.update(who.context, "workspace", workspace_id, rate_limit_id, changes)
    except InvalidRequest as exc:
        return await workspace_page(
            request, who, workspace_id, status=400, errors={key: exc.message}, values={key: form}
        )
    return redirect(f"/console/workspaces/{workspace_id}?notice=rate_limits_saved#rate-{rate_limit_id}")


@routes.action("POST", "/console/workspaces/{workspace_id}/spend-limits", permission=Permission.SPEND_LIMITS_WRITE)
async def set_workspace_spend_limit(request: Request, who: Viewer, form: Form, workspace_id: str) -> Response:
    svc = services(request)
    await svc.workspaces.get(who.context, workspace_id)  # 404 for a workspace the viewer cannot see
    try:
        await limit_views.set_spend(svc, who, form, Scope("workspace", workspace_id=workspace_id))
    except InvalidRequest as exc:
        return await workspace_page(
            request, who, workspace_id, status=400, errors={"spend": exc.message}, values={"spend": form}
        )
    return redirect(f"/console/workspaces/{workspace_id}?notice=spend_limit_saved#spend")


# -- deleting a spend limit (any scope) --------------------------------------------------------------


def _back(scope_type: str, scope_id: str) -> str:
    return f"/console/workspaces/{scope_id}" if scope_type == "workspace" else "/console/limits"


@routes.page("GET", "/console/limits/spend/{spend_limit_id}/delete", permission=Permission.SPEND_LIMITS_WRITE)
async def confirm_delete_spend_limit(request: Request, who: Viewer, spend_limit_id: str) -> Response:
    row = await limit_views.describe_spend(services(request), who, spend_limit_id)
    scope = "the organization" if row.scope_type == "organization" else f"{row.scope_type} {row.scope_id}"
    return render.render(
        request, who, "confirm.html",
        title=f"Delete the {row.period} spend limit of {scope}?",
        intro="This will delete the spend limit:",
        consequences=[
            f"The {row.period} cap of {row.amount} on {scope} is removed; its alerts "
            f"({row.thresholds or 'none'}) stop.",
            "Other limits that apply (the organization's, a workspace's, a key's or a user's) still bind.",
        ],
        action=f"/console/limits/spend/{spend_limit_id}/delete", button="Delete the spend limit",
        cancel=_back(row.scope_type, row.scope_id),
    )  # fmt: skip


@routes.action("POST", "/console/limits/spend/{spend_limit_id}/delete", permission=Permission.SPEND_LIMITS_WRITE)
async def delete_spend_limit(request: Request, who: Viewer, form: Form, spend_limit_id: str) -> Response:
    row = await limit_views.delete_spend(services(request), who, spend_limit_id)
    return redirect(f"{_back(row.scope_type, row.scope_id)}?notice=spend_limit_deleted")
