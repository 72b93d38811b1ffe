"""Appending audit events. Called inside the use case's unit of work, so an event commits (or rolls
back) together with the change it describes; there is no path that changes data without one."""

from __future__ import annotations

from typing import Any

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.services.context import Context
from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWork


def record(
    uow: UnitOfWork,
    ctx: Context,
    action: str,
    target_type: str,
    target_id: str,
    *,
    workspace_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        id=ids.new_id(ids.AUDIT_EVENT),
        organization_id=ctx.organization_id,
        occurred_at=utcnow(),
        actor_type=ctx.actor.kind,
        actor_id=ctx.actor.id,
        actor_user_id=ctx.actor.user_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        workspace_id=workspace_id,
        request_id=ctx.request_id,
        source_ip=ctx.source_ip,
        outcome=outcome,
        details=details or {},
    )
    uow.audit.add(event)
    return event
