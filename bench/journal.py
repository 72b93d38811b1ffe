#!/usr/bin/env python3
"""The usage journal's cost per request: what ``Recorder.offer`` adds to every metered request.

Times, on a realistic usage record (every column, a rollup entry), in one process with no event loop
work in between:

* ``bound``: ``gateway.bounds.bound_usage`` (fitting the strings to their columns);
* ``encode``: ``gateway.journal.encode`` (one JSON line, datetimes tagged);
* ``append``: ``Journal.append`` of an encoded line (one ``os.write`` on an ``O_APPEND`` file);
* ``offer``: the whole ``Recorder.offer`` (bound, encode, append, queue), against ``offer`` without
  a journal, and their difference: the journal's cost per request.

Segments are released as a flush would release them (every 500 records), so files are rotated and
emptied as in production. Run: ``.venv/bin/python bench/journal.py [--records N] [--dir DIR]``
(``--dir`` should be on the disk ``data_dir`` is on; default: a temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.bounds import bound_usage
from orgwarden.gateway.journal import Journal, encode
from orgwarden.gateway.recorder import Recorder
from orgwarden.storage.uow import UnitOfWorkFactory


def record(n: int) -> dict[str, Any]:
    return {
        "id": f"req_0100Vd1bpz31xlvSYg{n:06d}", "organization_id": "8d2a6f3e-5a8b-4f0e-9d1c-2b7e4c9a1f00",
        "workspace_id": "wrkspc_0100Vd1bpz31xlvSYgKmXMCa", "api_key_id": "apikey_0100Vd1bpz31xlvSYgKmXMCa",
        "model": "claude-sonnet-4-6", "service_tier": "standard", "inference_geo": "global",
        "context_window": "0-200k", "speed": "standard", "endpoint": "messages", "stream": False, "completed": True,
        "usage_estimated": False, "user_id": None,
        "input_tokens": 1234, "output_tokens": 567, "cache_creation_5m_tokens": 0, "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 0, "web_search_requests": 0, "cost_picodollars": 12_207_000_000, "status": 200,
        "latency_ms": 812, "created_at": datetime.now(UTC),
    }  # fmt: skip


def per_call(label: str, count: int, step: Callable[[int], None]) -> float:
    started = time.perf_counter()
    for n in range(count):
        step(n)
    micros = (time.perf_counter() - started) / count * 1e6
    print(f"{label:<24} {micros:8.2f} µs")
    return micros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    count: int = args.records
    base = args.dir or Path(tempfile.mkdtemp(prefix="orgwarden-journal-bench-"))
    rows = [record(n) for n in range(count)]
    cost = Cost(3_702_000_000, 8_505_000_000, 0, 0, 0, 0)
    entries = [Entry(row, cost, "global") for row in rows]

    per_call("bound", count, lambda n: bound_usage(rows[n]))
    lines: list[bytes] = []
    per_call("encode", count, lambda n: lines.append(encode("usage", rows[n], entries[n])))

    journal = Journal(base / "append")
    journal.open()

    def append(n: int) -> None:
        segment = journal.append(lines[n])
        if n % 500 == 499:
            journal.done(segment, 500)

    per_call("append", count, append)
    journal.close()

    async def offers() -> tuple[float, float]:
        results = []
        for with_journal in (False, True):
            journal = Journal(base / "offer") if with_journal else None
            recorder = Recorder(UnitOfWorkFactory(async_sessionmaker()), journal)
            if journal is not None:
                journal.open()

            def offer(n: int, recorder: Recorder = recorder, journal: Journal | None = journal) -> None:
                recorder.offer("usage", rows[n], entries[n])
                if n % 500 == 499:
                    recorder._release(recorder._take())  # as a committed batch is released

            results.append(per_call(f"offer ({'journal' if with_journal else 'no journal'})", count, offer))
            if journal is not None:
                journal.close()
        return results[0], results[1]

    without, with_journal = asyncio.run(offers())
    print(f"{'journal per request':<24} {with_journal - without:8.2f} µs  ({count} records, {base})")


if __name__ == "__main__":
    main()
