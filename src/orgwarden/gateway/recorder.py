"""Usage records and data-plane audit events, written off the request path in batches.

Requests put rows on a bounded in-memory queue and go on; one task per worker writes whatever has
queued every ``FLUSH_INTERVAL`` seconds (or at ``BATCH`` rows) in one transaction. A full queue makes
requests wait for room rather than drop records (backpressure, not loss). On shutdown the task is
stopped and everything still queued is written: the server finishes in-flight requests first on SIGTERM,
so a graceful stop under load loses nothing. A failed write is retried with backoff, keeping the rows
(at shutdown, ten times; rows still unwritten then are reported as lost, loudly). Rows are plain
column dicts written with one multi-row INSERT per table: building and flushing ORM objects cost
about ten times as much per row, on every request.

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
from orgwarden.storage.uow import UnitOfWorkFactory

log = logging.getLogger("orgwarden.gateway")

FLUSH_INTERVAL = 0.2
BATCH = 500
QUEUE_SIZE = 50_000
MAX_BACKOFF = 5.0
SHUTDOWN_ATTEMPTS = 10

Kind = Literal["usage", "audit"]
Item = tuple[Kind, dict[str, Any], Entry | None]


class Recorder:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow
        # A plain deque, not an asyncio.Queue: nothing waits for rows to arrive (the task looks every
        # FLUSH_INTERVAL), so a queue's wake-ups and bookkeeping were pure cost on every request.
        self._items: deque[Item] = deque()
        self._room = asyncio.Event()  # set when the task takes rows: a full queue has room again
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def offer(self, kind: Kind, row: dict[str, Any], rollup: Entry | None = None) -> bool:
        """``put`` without waiting: False (and nothing queued) when the queue is full. The gateway
        offers first and awaits ``put`` only then, sparing every request a coroutine."""
        if len(self._items) >= QUEUE_SIZE:
            return False
        self._items.append((kind, row, rollup))
        return True

    async def put(self, kind: Kind, row: dict[str, Any], rollup: Entry | None = None) -> None:
        """Queue a usage record or an audit event (column name -> value) for the next batch; a
        usage record with a ``rollup`` entry is also added to the usage rollups."""
        while not self.offer(kind, row, rollup):  # full: wait for room (backpressure, not loss)
            self._room.clear()
            await self._room.wait()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orgwarden-recorder")

    async def stop(self) -> None:
        """Let the background task finish the batch it holds, then write everything still queued."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        while self._items:
            await self._write(self._take())

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
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_INTERVAL)
            while self._items:
                await self._write(self._take())

    async def _write(self, rows: list[Item]) -> None:
        usage = [row for kind, row, _ in rows if kind == "usage"]
        events = [row for kind, row, _ in rows if kind == "audit"]
        rollups = fold(entry for _, _, entry in rows if entry is not None)
        delay, attempt = 0.1, 0
        while rows:
            attempt += 1
            try:
                async with self._uow() as uow:
                    await uow.usage.insert_many(usage)
                    await uow.rollups.add(rollups)
                    await uow.audit.insert_many(events)
                    await uow.commit()
                return
            except Exception as exc:
                if self._stopping.is_set() and attempt >= SHUTDOWN_ATTEMPTS:
                    log.critical("recorder: shutting down with %d rows that could not be written: %s", len(rows), exc)
                    return
                log.error("recorder: cannot write %d rows (%s); retrying in %.1fs", len(rows), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
