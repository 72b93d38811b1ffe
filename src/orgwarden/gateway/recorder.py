"""Usage records and data-plane audit events, written off the request path in batches.

Requests put rows on a bounded in-memory queue and go on; one task per worker writes whatever has
queued every ``FLUSH_INTERVAL`` seconds in one transaction (``BATCH`` rows at most; a backlog of more
is written batch after batch without waiting). Rows that arrive while a batch is being written wait
for the next interval: writing them at once, as it first did, made a loaded server commit a few
rows at a time, each transaction's fixed cost paid over and over (bench/RESULTS.md). A full queue makes
requests wait for room rather than drop records (backpressure, not loss). Rows are plain column
dicts written with one multi-row INSERT per table: building and flushing ORM objects cost about ten
times as much per row, on every request.

Nothing can wedge it, and nothing makes it forget:

* **Bounded at the gate.** ``offer`` fits every client-derived string to its column first
  (``gateway.bounds``), so no producer can hand it a row the database must refuse for its size.
* **Journaled before the answer completes.** ``offer`` also appends the row to this process's
  journal (``gateway.journal``), which survives a killed process; the row leaves the journal once
  committed. At start, journals of processes that are gone are replayed into the queue.
* **Transient failures are waited out, refusals are isolated.** When the database cannot be reached
  (``storage.failures.is_unavailable``) the batch is retried with backoff, keeping its rows. When it
  refuses a batch for another reason, the batch is written row by row; a row still refused after
  ``REFUSED_ATTEMPTS`` tries is dropped loudly (a log line, ``dropped`` counted) and never blocks the
  rest. A row committed whose acknowledgement was lost comes back as a duplicate: row by row, rows
  are written only if absent, so that is no refusal.
* **Idempotent replay.** Replayed rows (and rows written one by one) are inserted only if no row
  with their id exists, and only the rows actually inserted are added to the usage rollups, so a
  record is never counted twice. Audit events are chained when sealed (``storage.audit_log``), so a
  replayed event joins the chain at its end and ``orgwarden audit verify`` holds.
* **A bounded stop.** ``stop(timeout)`` writes what it can until the deadline and leaves the rest in
  the journal for the next start, whatever the database does.

Usage records of ``/v1/messages`` also carry a rollup entry: the batch is folded into the usage
rollups (``domain.rollups``) and added to them in the same transaction as the records, so reports,
which read only the rollups, always agree with the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Literal

from orgwarden.domain.rollups import Entry, fold
from orgwarden.gateway.bounds import bound_audit, bound_usage
from orgwarden.gateway.journal import Journal, encode
from orgwarden.storage.failures import describe, is_unavailable
from orgwarden.storage.uow import UnitOfWorkFactory

log = logging.getLogger("orgwarden.gateway")

FLUSH_INTERVAL = 0.2
BATCH = 2000  # a loaded worker's interval (7,000 req/s x 0.2 s) in one: each batch costs ~1 ms of the loop
QUEUE_SIZE = 50_000
MAX_BACKOFF = 5.0
REFUSED_ATTEMPTS = 3  # a lone row refused this often is dropped (a race on the audit chain is retried)
CANCEL_GRACE = 1.0  # after stop's deadline, how long a cancelled write may take to unwind

Kind = Literal["usage", "audit"]
# kind, row, rollup entry, journal segment (-1: not journaled), replayed (write only if absent)
Item = tuple[Kind, dict[str, Any], Entry | None, int, bool]


class Recorder:
    def __init__(self, uow: UnitOfWorkFactory, journal: Journal | None = None) -> None:
        self._uow = uow
        self._journal = journal
        # A plain deque, not an asyncio.Queue: nothing waits for rows to arrive (the task looks every
        # FLUSH_INTERVAL), so a queue's wake-ups and bookkeeping were pure cost on every request.
        self._items: deque[Item] = deque()
        self._room = asyncio.Event()  # set when the task takes rows: a full queue has room again
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._deadline: float | None = None  # set by stop: past it, nothing is retried
        self._inflight = 0
        self.dropped = 0
        """Rows the database refused for good (not for being unreachable): logged, and counted here."""
        self.replayed = 0
        """Rows read back from the journals of processes that were gone when this one started."""

    @property
    def queued(self) -> int:
        """Rows waiting to be written (the queue and the batch being written)."""
        return len(self._items) + self._inflight

    @property
    def journal_pending(self) -> int:
        return self._journal.pending if self._journal is not None else 0

    def offer(self, kind: Kind, row: dict[str, Any], rollup: Entry | None = None) -> bool:
        """``put`` without waiting: False (and nothing queued) when the queue is full. The gateway
        offers first and awaits ``put`` only then, sparing every request a coroutine. The row is
        bounded to its columns and journaled before this returns."""
        if len(self._items) >= QUEUE_SIZE:
            return False
        if kind == "usage":
            bound_usage(row)
        else:
            bound_audit(row)
        segment = -1
        if self._journal is not None:
            segment = self._journal.append(encode(kind, row, rollup))
        self._items.append((kind, row, rollup, segment, False))
        return True

    async def put(self, kind: Kind, row: dict[str, Any], rollup: Entry | None = None) -> None:
        """Queue a usage record or an audit event (column name -> value) for the next batch; a
        usage record with a ``rollup`` entry is also added to the usage rollups."""
        while not self.offer(kind, row, rollup):  # full: wait for room (backpressure, not loss)
            self._room.clear()
            await self._room.wait()

    async def start(self) -> None:
        """Open this process's journal, start writing, then queue what dead processes left behind."""
        if self._journal is not None:
            try:
                self._journal.open()
            except OSError as exc:  # serve anyway: records still go to the database
                log.error("journal: cannot open %s (%s); running without one", self._journal.directory, exc)
                self._journal = None
        self._task = asyncio.create_task(self._run(), name="orgwarden-recorder")
        if self._journal is not None:
            try:
                await self._replay(self._journal)
            except OSError as exc:  # what was not read stays where it is, for the next start
                log.error("journal: cannot replay what stopped processes left (%s)", exc)

    async def _replay(self, journal: Journal) -> None:
        for path, records in journal.orphans():
            for kind, row, rollup in records:
                while len(self._items) >= QUEUE_SIZE:
                    self._room.clear()
                    await self._room.wait()
                segment = journal.append(encode(kind, row, rollup))  # safe here before the old file goes
                self._items.append((kind, row, rollup, segment, True))
            journal.forget(path)
            self.replayed += len(records)
            log.warning("journal: replaying %d records left by a stopped process (%s)", len(records), path.name)

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (a deadline, not a call time-out)
        """Write everything queued, for at most ``timeout`` seconds; what could not be written by then
        (the database being down or frozen) stays in the journal for the next start."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        self._stopping.set()
        if self._task is None and self._items:  # never started (a one-off writer): write what it holds
            self._task = asyncio.create_task(self._run(), name="orgwarden-recorder")
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=CANCEL_GRACE)
        left = self.queued
        if self._journal is not None:
            kept = self._journal.close()
            if kept:
                log.warning("recorder: %d records left in the journal; they are written at the next start", kept)
        elif left:
            log.critical("recorder: shutting down with %d rows that could not be written (no journal)", left)

    def _take(self) -> list[Item]:
        items = self._items
        if len(items) <= BATCH:
            rows = list(items)
            items.clear()
        else:
            rows = [items.popleft() for _ in range(BATCH)]
        self._room.set()
        return rows

    async def _run(self) -> None:
        while True:
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), FLUSH_INTERVAL)
            while self._items:
                batch = self._take()
                self._inflight = len(batch)
                try:
                    written = await self._persist(batch, single=False)
                finally:
                    self._inflight = 0
                if not written:  # stop's deadline passed: what is left stays in the journal
                    return
                if len(self._items) < BATCH and not self._stopping.is_set():
                    break  # what came meanwhile waits for the next interval: batches, not a trickle
            if self._stopping.is_set():
                return

    def _past_deadline(self) -> bool:
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline

    async def _pause(self, delay: float) -> None:
        if self._deadline is not None:
            delay = min(delay, max(0.0, self._deadline - asyncio.get_running_loop().time()))
        await asyncio.sleep(delay)

    async def _persist(self, items: list[Item], *, single: bool) -> bool:
        """Write ``items`` (see the module docstring); False when stop's deadline passed first."""
        delay, refused = 0.1, 0
        while True:
            try:
                await self._commit(items, only_absent=single or any(item[4] for item in items))
            except Exception as exc:
                if is_unavailable(exc):
                    if self._past_deadline():
                        return False
                    log.error(
                        "recorder: cannot write %d rows (%s); retrying in %.1fs", len(items), describe(exc), delay
                    )
                    await self._pause(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                if not single:
                    log.error("recorder: the database refused a batch of %d rows (%s); writing them one by one",
                              len(items), describe(exc))  # fmt: skip
                    for item in items:
                        if not await self._persist([item], single=True):
                            return False
                    return True
                refused += 1
                if refused < REFUSED_ATTEMPTS:
                    await self._pause(0.05 * refused)
                    continue
                kind, row = items[0][0], items[0][1]
                self.dropped += 1
                log.error(
                    "recorder: dropped %s row %s that the database refuses (%s); %d dropped so far",
                    kind, str(row.get("id"))[:64], describe(exc), self.dropped,
                )  # fmt: skip
            self._release(items)
            return True

    def _release(self, items: list[Item]) -> None:
        journal = self._journal
        if journal is None:
            return
        counts: dict[int, int] = {}
        for item in items:
            counts[item[3]] = counts.get(item[3], 0) + 1
        for segment, count in counts.items():
            journal.done(segment, count)

    async def _commit(self, items: list[Item], *, only_absent: bool) -> None:
        usage = [item for item in items if item[0] == "usage"]
        events = [item[1] for item in items if item[0] == "audit"]
        async with self._uow() as uow:
            if only_absent:
                if usage:
                    present = await uow.usage.existing([item[1]["id"] for item in usage])
                    usage = [item for item in usage if item[1]["id"] not in present]
                if events:
                    present = await uow.audit.existing([event["id"] for event in events])
                    events = [event for event in events if event["id"] not in present]
            await uow.usage.insert_many([item[1] for item in usage])
            await uow.rollups.add(fold(item[2] for item in usage if item[2] is not None))
            await uow.audit.insert_many(events)
            await uow.commit()
