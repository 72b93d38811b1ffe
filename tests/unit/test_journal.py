"""The usage journal (``gateway.journal``): lossless lines, segments deleted once written, orphans
found by their lock. A second process holding a segment is a real process (``python -c``)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.journal import Journal, decode, encode


def test_a_journal_line_reads_back_exactly_with_its_rollup_entry() -> None:
    row = {"id": "req_1", "created_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "n": 3,
           "amount": Decimal("1.25"), "stream": True, "details": {"a": [1, "b", None]}}  # fmt: skip
    kind, back, rollup = decode(encode("usage", row, Entry(row, Cost(1, 2, 3, 4, 5, 6), "us")))
    assert kind == "usage"
    assert back == row
    assert rollup is not None
    assert rollup.record is back
    assert rollup.cost == Cost(1, 2, 3, 4, 5, 6)
    assert rollup.inference_geo == "us"


def test_segments_are_private_and_gone_once_everything_in_them_is_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=200)
    journal.open()
    segments = [journal.append(encode("audit", {"id": f"e{i}", "pad": "x" * 80}, None)) for i in range(6)]
    files = sorted((tmp_path / "j").iterdir())
    assert len(files) >= 3
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    assert journal.pending == 6
    for segment in segments:
        journal.done(segment)
    assert journal.pending == 0
    remaining = list((tmp_path / "j").iterdir())
    assert len(remaining) == 1  # the current segment, emptied
    assert remaining[0].stat().st_size == 0
    assert journal.close() == 0
    assert not (tmp_path / "j").exists()


def test_only_segments_whose_process_is_gone_are_replayed(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    dead = Journal(directory)
    dead.open()
    dead.append(encode("usage", {"id": "req_dead"}, None))
    assert dead.close() == 1  # left for the next start, as a stopped process leaves it
    holder = subprocess.Popen(  # a living process with its own segment
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from orgwarden.gateway.journal import Journal, encode\n"
            f"j = Journal(Path({str(directory)!r})); j.open(); j.append(encode('usage', {{'id': 'req_alive'}}, None))\n"
            "print('ready', flush=True); time.sleep(60)"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        mine = Journal(directory)
        mine.open()
        found = {}
        for path, records in mine.orphans():
            found[path.name] = [row["id"] for _, row, _ in records]
            mine.forget(path)
        assert list(found.values()) == [["req_dead"]]
        assert len([p for p in directory.iterdir() if p.stat().st_size]) == 1  # the living one's
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    again = Journal(directory)
    assert [[row["id"] for _, row, _ in records] for _, records in again.orphans()][-1] == ["req_alive"]
    assert os.path.isdir(directory)


def test_a_whole_usage_record_takes_the_compact_form_and_reads_back_exactly() -> None:
    from orgwarden.storage.tables import UsageRecord

    row: dict[str, object] = {column.key: f"v-{column.key}" for column in UsageRecord.__table__.columns}
    row.update(stream=True, input_tokens=12, created_at=datetime(2026, 5, 6, 7, 8, 9, 1, tzinfo=UTC))
    line = encode("usage", row, Entry(row, Cost(1, 2, 3, 4, 5, 6), "global"))
    assert line.startswith(b'["u",')
    kind, back, rollup = decode(line)
    assert (kind, back) == ("usage", row)
    assert rollup is not None
    assert (rollup.cost, rollup.inference_geo) == (Cost(1, 2, 3, 4, 5, 6), "global")
    kind, back, rollup = decode(encode("usage", row, None))
    assert (back, rollup) == (row, None)
