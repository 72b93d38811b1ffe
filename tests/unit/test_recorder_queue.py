"""The recorder's queue (``gateway.recorder``): bounded, and a full queue makes ``put`` wait for
room rather than drop a row. No database: rows are taken as the background task would take them."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import async_sessionmaker

from orgwarden.gateway.recorder import BATCH, QUEUE_SIZE, Recorder
from orgwarden.storage.uow import UnitOfWorkFactory


def make() -> Recorder:
    return Recorder(UnitOfWorkFactory(async_sessionmaker()))  # no database: nothing is written here


def test_rows_are_taken_in_batches_in_the_order_they_were_queued() -> None:
    recorder = make()
    for index in range(BATCH + 3):
        assert recorder.offer("usage", {"id": index})
    first, second = recorder._take(), recorder._take()
    assert [row["id"] for _, row, *_ in first] == list(range(BATCH))
    assert [row["id"] for _, row, *_ in second] == [BATCH, BATCH + 1, BATCH + 2]
    assert recorder._take() == []


def test_a_full_queue_refuses_an_offer_and_makes_put_wait_for_room() -> None:
    async def run() -> None:
        recorder = make()
        for index in range(QUEUE_SIZE):
            assert recorder.offer("audit", {"id": index})
        assert not recorder.offer("audit", {"id": "refused"})
        waiting = asyncio.ensure_future(recorder.put("audit", {"id": "waited"}))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        taken = recorder._take()
        assert len(taken) == BATCH
        await asyncio.wait_for(waiting, 5)
        rest = []
        while batch := recorder._take():
            rest += batch
        ids = [row["id"] for _, row, *_ in taken + rest]
        assert ids == [*range(QUEUE_SIZE), "waited"]

    asyncio.run(run())
