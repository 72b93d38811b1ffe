"""The chain rules themselves (``domain.audit_chain``), without a database: what each kind of break
is called, and where. The database-backed cases are in ``test_tamper_evidence``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orgwarden.domain.audit_chain import GENESIS, ChainWalker, Head, canonical, event_hash


def chain(length: int) -> list[dict[str, Any]]:
    events, link = [], GENESIS
    for seq in range(1, length + 1):
        event = {
            "id": f"evt_{seq:024d}", "organization_id": "org", "seq": seq,
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seq), "actor_type": "system",
            "actor_id": "test", "actor_user_id": None, "action": "thing.do", "target_type": "thing",
            "target_id": str(seq), "workspace_id": None, "request_id": None, "source_ip": None, "outcome": "success",
            "details": {"ü": [seq]}, "prev_hash": link,
        }  # fmt: skip
        event["hash"] = link = event_hash(event)
        events.append(event)
    return events


def walk(events: list[dict[str, Any]], head: Head | None) -> ChainWalker:
    walker = ChainWalker()
    for event in events:
        walker.check(event)
    walker.finish(head)
    return walker


def test_an_intact_chain_and_an_empty_one_pass() -> None:
    events = chain(3)
    walker = walk(events, Head(3, events[-1]["hash"]))
    assert (walker.broken, walker.count, walker.last) == (None, 3, Head(3, events[-1]["hash"]))
    assert walk([], None).broken is None


def test_the_canonical_form_is_sorted_compact_ascii_json_with_microsecond_utc_times() -> None:
    text = canonical(chain(1)[0]).decode()
    assert text.startswith('{"action":"thing.do","actor_id":"test","actor_type":"system","actor_user_id":null,')
    assert '"details":{"\\u00fc":[1]}' in text
    assert '"occurred_at":"2026-01-01T00:00:01.000000Z"' in text
    assert '"hash"' not in text


def test_a_repeated_seq_is_a_fork() -> None:
    events = chain(3)
    broken = walk([events[0], events[1], events[1], events[2]], Head(3, events[-1]["hash"])).broken
    assert broken is not None
    assert (broken.event_id, broken.seq, broken.problem) == (events[1]["id"], 2, "seq_repeated")


def test_a_head_that_disagrees_with_the_last_event_or_is_gone_is_named() -> None:
    events = chain(2)
    moved = walk(events, Head(2, "f" * 64)).broken
    assert moved is not None
    assert (moved.event_id, moved.problem) == (events[1]["id"], "head_mismatch")
    gone = walk(events, None).broken
    assert gone is not None
    assert (gone.event_id, gone.problem, gone.message) == (
        None,
        "head_mismatch",
        "the chain head is missing (it was deleted)",
    )
    missing = walk(events, Head(4, "0" * 64)).broken
    assert missing is not None
    assert (missing.seq, missing.problem) == (3, "seq_gap")
    assert "seq 3 to 4 missing at the end" in missing.message


def test_only_the_first_break_is_reported() -> None:
    events = chain(4)
    events[1]["outcome"] = "failure"
    del events[2]
    broken = walk(events, Head(4, events[-1]["hash"])).broken
    assert broken is not None
    assert (broken.seq, broken.problem) == (2, "hash_mismatch")
