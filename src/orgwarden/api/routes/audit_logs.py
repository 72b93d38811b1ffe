"""The audit log (extension): ``GET /v1/organizations/audit_logs``, newest first, ``page`` cursors.

Read only: no route changes or deletes an event, so any other method on the path is answered 405
in the error envelope. Filters ``actor_id``, ``actor_type``, ``action`` (repeatable, either
spelling), ``target_type``, ``target_id``, ``workspace_id``, ``outcome``, ``starting_at`` (inclusive)
and ``ending_at`` (exclusive), RFC 3339; they are checked by ``services.audit_log``, shared with the
CLI.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from orgwarden.api import render
from orgwarden.api.params import QueryParams
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.policy import Permission
from orgwarden.services.audit_log import MAX_LIMIT, audit_filter

routes = AdminRouter()


@routes.route("GET", "/v1/organizations/audit_logs", permission=Permission.AUDIT_READ)
async def list_audit_logs(request: Request) -> Response:
    q = QueryParams(request)
    where = audit_filter(
        actor_id=q.string("actor_id"), actor_type=q.string("actor_type"), actions=q.strings("action"),
        target_type=q.string("target_type"), target_id=q.string("target_id"), workspace_id=q.string("workspace_id"),
        outcome=q.string("outcome"), starting_at=q.string("starting_at"), ending_at=q.string("ending_at"),
    )  # fmt: skip
    result = await services(request).audit_log.list(
        context(request), where, limit=q.integer("limit", default=20, low=1, high=MAX_LIMIT), page=q.string("page")
    )
    return ok(render.cursor_page(result, render.audit_event))
