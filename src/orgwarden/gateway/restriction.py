"""The tenant restriction (``anthropic-allowed-org-ids``), one check for every authenticated surface.

Anthropic refuses *any* access from an organization its tenant-restriction headers do not list, so
the data plane, the Admin API and the telemetry receiver all run these same two steps:

    allowed_org_ids(headers)   before authentication: a syntax error is a 400 whoever sends it
    enforce(allowed, caller)   after it: an organization not listed is the spec's 403

Each refusal is a ``Refusal`` with the gateway's exact envelope (``error_code``
``tenant_restriction_violation`` in ``error`` and in ``error.details``), and leaves a
``tenant_restriction.check`` audit event (outcome ``invalid_request`` or ``denied``) queued on the
recorder. Parsing is ``domain.tenant``'s, with its memo for the header value a proxy sends every time.
Client-controlled strings in the event (path, error text) are cut to ``MAX_DETAIL`` characters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from orgwarden import ids
from orgwarden.domain import tenant
from orgwarden.domain.clock import utcnow
from orgwarden.gateway.refusal import Refusal

MESSAGE: Final = "Access restricted by network policy. Contact IT Administrator."
CODE: Final = "tenant_restriction_violation"
ACTION: Final = "tenant_restriction.check"
MAX_DETAIL: Final = 512

AuditSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """The request being checked, as the audit trail records it."""

    request_id: str
    method: str
    path: str
    source_ip: str | None
    auth_kind: str  # "api_key", "admin_api_key", "invite_token" or "none"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the credential says is calling: the organization checked against the list."""

    organization_id: str
    actor_type: str  # "api_key", "admin_api_key", "anonymous", ...
    actor_id: str
    actor_user_id: str | None = None
    workspace_id: str | None = None


class TenantGuard:
    """Parses and enforces the restriction; audit events go to ``audit`` (the recorder's queue).
    ``installation`` gives the organization recorded for a refusal nobody could be identified for."""

    def __init__(self, audit: AuditSink, installation: Callable[[], str | None]) -> None:
        self._audit = audit
        self._installation = installation

    def installation(self) -> str | None:
        """The organization this installation serves (``None`` before it is initialized)."""
        return self._installation()

    async def allowed_org_ids(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        attempt: Attempt,
        identify: Callable[[], Awaitable[Caller | None]] | None = None,
    ) -> frozenset[str] | None:
        """The listed organizations (``None``: no restriction), or a 400 refusal; ``identify`` names
        the sender of a malformed header for the audit trail (the 400 stands whoever it is)."""
        try:
            return tenant.parse_allowed_org_ids(headers)
        except tenant.TenantHeaderError as exc:
            await self.malformed(attempt, await identify() if identify is not None else None, exc)

    async def enforce(self, allowed: frozenset[str] | None, attempt: Attempt, caller: Caller) -> None:
        """Nothing when ``caller``'s organization is listed (or nothing is); else the spec's 403."""
        if not tenant.is_allowed(caller.organization_id, allowed):
            await self.deny(allowed, attempt, caller)

    async def malformed(self, attempt: Attempt, caller: Caller | None, error: tenant.TenantHeaderError) -> NoReturn:
        """Audit a syntax error in the headers and refuse with 400 (the data plane's own parse calls it)."""
        await self.record(attempt, "invalid_request", caller, None, str(error))
        raise Refusal(400, "invalid_request_error", str(error))

    async def deny(self, allowed: frozenset[str] | None, attempt: Attempt, caller: Caller) -> NoReturn:
        """Audit an organization the headers do not list and refuse with the spec's 403."""
        await self.record(attempt, "denied", caller, sorted(allowed or ()), None)
        raise forbidden()

    async def record(
        self, attempt: Attempt, outcome: str, caller: Caller | None, listed: list[str] | None, error: str | None
    ) -> None:
        organization_id = caller.organization_id if caller is not None else self._installation()
        if organization_id is None:
            return
        await self._audit(event(organization_id, attempt, outcome, caller, listed, error))


def forbidden() -> Refusal:
    """The spec's 403 body, with the machine-readable code where the SDK looks for it as well."""
    return Refusal(403, "permission_error", MESSAGE, code=CODE, error_code=CODE)


def event(
    organization_id: str,
    attempt: Attempt,
    outcome: str,
    caller: Caller | None,
    listed: list[str] | None,
    error: str | None,
) -> dict[str, Any]:
    """A ``tenant_restriction.check`` audit row (column name -> value)."""
    details: dict[str, Any] = {
        "method": attempt.method[:16],
        "path": attempt.path[:MAX_DETAIL],
        "auth_kind": attempt.auth_kind,
        "allowed_org_ids": listed,
    }
    if error is not None:
        details["error"] = error[:MAX_DETAIL]
    return {
        "id": ids.new_id(ids.AUDIT_EVENT),
        "organization_id": organization_id,
        "occurred_at": utcnow(),
        "actor_type": caller.actor_type if caller is not None else "anonymous",
        "actor_id": caller.actor_id if caller is not None else "unauthenticated",
        "actor_user_id": caller.actor_user_id if caller is not None else None,
        "action": ACTION,
        "target_type": "organization",
        "target_id": organization_id,
        "workspace_id": caller.workspace_id if caller is not None else None,
        "request_id": attempt.request_id,
        "source_ip": attempt.source_ip,
        "outcome": outcome,
        "details": details,
    }
