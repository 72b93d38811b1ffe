"""Reading the audit log (the Admin API's ``GET /v1/organizations/audit_logs``, ``orgwarden audit
list|export``) and verifying its hash chain (``orgwarden audit verify``).

There is no use case that changes or removes an event: the log is append-only here, in every route
and command, and in the database (triggers, migration 0007).

**Paging.** Pages are in ``seq`` order, newest first for the API, and the cursor (``page`` in,
``next_page`` out, opaque) is the seq of the last event of the page. ``seq`` is the order events
were committed in, so events committed while a client pages land above its first page and never
shift the pages that follow: no repeats, no gaps. (Event ids are time-ordered too, but by when a
use case *started*; the gateway writes its events in batches, so an id can commit after a larger
one.) The same cursor works whatever the filters, which narrow what a page shows, not the order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from orgwarden.domain.audit_chain import ChainBreak, ChainWalker, Head
from orgwarden.domain.clock import parse_rfc3339
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit, cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.storage.audit_log import AuditFilter
from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWorkFactory

MAX_LIMIT = 1000
VERIFY_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of walking a chain: how many events were checked, the head they end in, and the
    first broken link (``None`` when the chain is intact)."""

    events: int
    head: Head
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.broken is None


@dataclass(frozen=True, slots=True)
class EventInChain:
    """One event and its neighbours in the chain (``None`` at either end): ``prev_hash`` of the event
    is the hash of ``previous``, and its own hash is ``next``'s ``prev_hash``."""

    event: AuditEvent
    previous: AuditEvent | None
    next: AuditEvent | None


def parse_time(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 timestamp with a zone (``Z`` or an offset), or a 400 naming the parameter."""
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise InvalidRequest(
            f"{name}: {value!r} is not an RFC 3339 timestamp with a time zone (e.g. 2025-08-01T00:00:00Z)"
        ) from None


def audit_filter(
    *,
    actor_id: str | None = None,
    actor_type: str | None = None,
    actions: Sequence[str] = (),
    target_type: str | None = None,
    target_id: str | None = None,
    workspace_id: str | None = None,
    outcome: str | None = None,
    starting_at: str | None = None,
    ending_at: str | None = None,
) -> AuditFilter:
    """The filter of a query, from its parameters as they arrive (strings), checked: the API and the
    CLI both build theirs here, so they refuse the same values with the same messages."""
    start, end = parse_time("starting_at", starting_at), parse_time("ending_at", ending_at)
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("ending_at: must be after starting_at")
    return AuditFilter(
        actor_id=actor_id, actor_type=actor_type, actions=tuple(actions), target_type=target_type,
        target_id=target_id, workspace_id=workspace_id, outcome=outcome, starting_at=start, ending_at=end,
    )  # fmt: skip


def _position(page: str | None) -> int | None:
    raw = cursors.decode(page)
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest("page: the cursor does not belong to this list (use next_page of a previous response)")
    return int(raw)


class AuditLogService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def list(
        self, ctx: Context, where: AuditFilter, *, limit: int = 20, page: str | None = None, newest_first: bool = True
    ) -> CursorPage[AuditEvent]:
        """One page of the organization's matching events, in seq order (see the module docstring)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
        after = _position(page)
        async with self._uow() as uow:
            rows = await uow.audit.page(
                ctx.organization_id, where, after_seq=after, limit=limit + 1, newest_first=newest_first
            )
        if len(rows) > limit:
            return CursorPage(rows[:limit], cursors.encode(str(rows[limit - 1].seq)))
        return CursorPage(rows, None)

    async def get(self, ctx: Context, event_id: str) -> EventInChain:
        """One event of the organization, with the events before and after it in the chain (the
        console's event page); 404 naming the id otherwise."""
        if len(event_id) > 100:
            raise InvalidRequest("event id: longer than 100 characters")
        async with self._uow() as uow:
            event = await uow.audit.get(ctx.organization_id, event_id)
            if event is None:
                raise NotFound(f"audit event {event_id!r} not found")
            around = {
                row.seq: row for row in await uow.audit.at_seq(ctx.organization_id, [event.seq - 1, event.seq + 1])
            }
        return EventInChain(event, around.get(event.seq - 1), around.get(event.seq + 1))

    async def every(
        self, ctx: Context, where: AuditFilter, *, newest_first: bool = False, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Sequence[AuditEvent]]:
        """Every matching event, a page at a time (an export never holds the whole log)."""
        page: str | None = None
        while True:
            result = await self.list(ctx, where, limit=page_size, page=page, newest_first=newest_first)
            if result.items:
                yield result.items
            if result.next_page is None:
                return
            page = result.next_page

    async def verify(self, organization_id: str) -> Verification:
        """Walk the organization's whole chain in seq order and name the first broken link.

        The head is read first and the walk stops at its seq, so events committed meanwhile are left
        for the next verification instead of racing this one. Events are read in chunks, in their own
        short transactions: memory stays flat and no lock is held across the walk."""
        async with self._uow() as uow:
            head = await uow.audit.head(organization_id)
        walker = ChainWalker()
        after = 0
        while walker.broken is None:
            async with self._uow() as uow:
                chunk = await uow.audit.chain(
                    organization_id, after_seq=after, through_seq=head.seq if head else None, limit=VERIFY_CHUNK
                )
            for event in chunk:
                if walker.check(event) is not None:
                    break
            if len(chunk) < VERIFY_CHUNK:
                break
            after = int(chunk[-1]["seq"])
        broken = walker.finish(head)
        return Verification(walker.count, walker.last, broken)

    async def verify_recorded(self, ctx: Context) -> Verification:
        """``verify``, then an ``audit_log.verify`` event saying who verified and what was found
        (outcome ``success`` or ``failure``, the count, the head and the first broken link), so the
        console's overview can show when the chain was last checked and with what result."""
        result = await self.verify(ctx.organization_id)
        details: dict[str, object] = {
            "events": result.events,
            "head_seq": result.head.seq,
            "head_hash": result.head.hash,
        }
        if result.broken is not None:
            details["broken"] = {
                "event_id": result.broken.event_id,
                "seq": result.broken.seq,
                "problem": result.broken.problem,
            }
        async with self._uow() as uow:
            audit.record(
                uow,
                ctx,
                "audit_log.verify",
                "organization",
                ctx.organization_id,
                outcome="success" if result.intact else "failure",
                details=details,
            )
            await uow.commit()
        return result
