"""Audit events for the Admin API's authorization refusals (403 ``permission_error``).

A refusal of an identified actor (a signed-in user whose role does not allow the route, or the
action in that workspace) is security-relevant: it is queued on the recorder, like the tenant
restriction's refusals, as an ``authorization.check`` event with outcome ``denied``, naming the user.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.gateway.restriction import capped
from orgwarden.services.context import Context

ACTION: Final = "authorization.check"

AuditSink = Callable[[dict[str, Any]], Awaitable[None]]


def event(ctx: Context, method: str, path: str, message: str) -> dict[str, Any]:
    """An ``authorization.check`` audit row (column name -> value)."""
    actor = ctx.actor
    return {
        "id": ids.new_id(ids.AUDIT_EVENT),
        "organization_id": ctx.organization_id,
        "occurred_at": utcnow(),
        "actor_type": actor.kind,
        "actor_id": actor.id,
        "actor_user_id": actor.user_id,
        "action": ACTION,
        "target_type": "organization",
        "target_id": ctx.organization_id,
        "workspace_id": None,
        "request_id": ctx.request_id,
        "source_ip": ctx.source_ip,
        "outcome": "denied",
        "details": {"method": method[:16], "path": capped(path), "org_role": actor.org_role, "error": capped(message)},
    }


async def audit_denied(request: Request, message: str) -> None:
    """Queue the event for a 403 answered on ``request``, if it was authenticated."""
    ctx: Context | None = getattr(request.state, "context", None)
    sink: AuditSink | None = getattr(request.app.state, "audit_sink", None)
    if ctx is None or sink is None:
        return
    await sink(event(ctx, request.method, request.url.path, message))
