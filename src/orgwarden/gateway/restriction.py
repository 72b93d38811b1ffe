"""The tenant restriction (``anthropic-allowed-org-ids``), one check for every authenticated surface.

Anthropic refuses *any* access from an organization its tenant-restriction headers do not list, so
the data plane, the Admin API and the telemetry receiver all run these same two steps:

    allowed_org_ids(headers)   before authentication: a syntax error is a 400 whoever sends it
    enforce(allowed, caller)   after it: an organization not listed is the spec's 403

Each refusal is a ``Refusal`` with the gateway's exact envelope (``error_code``
``tenant_restriction_violation`` in ``error`` and in ``error.details``), and leaves a
``tenant_restriction.check`` audit event (outcome ``invalid_request`` or ``denied``) queued on the
recorder. Parsing is ``domain.tenant``'s, with its memo for the header value a proxy sends every time.
Client-controlled strings in the event (path, error text) are cut to ``MAX_DETAIL`` characters,
with a marker. Refusals nobody could be identified for (no key, or an unknown one) are audited at
most ``KEYLESS_AUDITS_PER_SECOND`` a second per process (bursts of ``KEYLESS_AUDIT_BURST``), so that
nobody can fill the append-only audit log without a key; the rest are counted (``suppressed``) and
one log line a second says how many there were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from orgwarden import ids
from orgwarden.domain import tenant
from orgwarden.domain.bounded import RateGate
from orgwarden.domain.clock import utcnow
from orgwarden.gateway.refusal import Refusal

MESSAGE: Final = "Access restricted by network policy. Contact IT Administrator."
CODE: Final = "tenant_restriction_violation"
ACTION: Final = "tenant_restriction.check"
MAX_DETAIL: Final = 512
KEYLESS_AUDITS_PER_SECOND: Final = 10
KEYLESS_AUDIT_BURST: Final = 20

log = logging.getLogger("orgwarden.gateway")

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
        self._keyless = RateGate(KEYLESS_AUDITS_PER_SECOND, KEYLESS_AUDIT_BURST)
        self._report: asyncio.TimerHandle | None = None

    @property
    def suppressed(self) -> int:
        """Refusals of unidentified senders not audited (over the rate) since start."""
        return self._keyless.total_suppressed

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
        problem = capped(str(error))
        await self.record(attempt, "invalid_request", caller, None, problem)
        raise Refusal(400, "invalid_request_error", problem)

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
        if caller is None and not self._keyless_allowed():
            return
        await self._audit(event(organization_id, attempt, outcome, caller, listed, error))

    def _keyless_allowed(self) -> bool:
        if self._keyless.allow(time.monotonic()):
            return True
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(1.0, self._report_suppressed)
        return False

    def _report_suppressed(self) -> None:
        self._report = None
        count = self._keyless.take_suppressed()
        if count:
            log.warning(
                "audit: %d keyless refusals in the last second were not audited"
                " (more than %d a second; %d since start)",
                count,
                KEYLESS_AUDITS_PER_SECOND,
                self._keyless.total_suppressed,
            )


def capped(text: str, limit: int = MAX_DETAIL) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


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
        "path": capped(attempt.path),
        "auth_kind": attempt.auth_kind,
        "allowed_org_ids": listed,
    }
    if error is not None:
        details["error"] = capped(error)
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
