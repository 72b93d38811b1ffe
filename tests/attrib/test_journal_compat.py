"""A journal line written before migration 0014 (no ``user_id`` value) still reads back, as a record
without a user, so an upgrade never strands records that were journaled but not yet written."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.journal import _USAGE, decode, encode


def record(user_id: str | None) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(_USAGE, 0)
    row.update(id="req_1", organization_id="org", workspace_id="wrkspc_1", api_key_id="apikey_1", model="m",
               service_tier="standard", inference_geo="global", context_window="0-200k", speed="standard",
               endpoint="messages", stream=False, completed=True, usage_estimated=False,
               created_at=datetime(2026, 12, 6, 12, tzinfo=UTC), user_id=user_id)  # fmt: skip
    return row


def test_a_line_from_before_user_id_reads_back_without_a_user() -> None:
    # user_id (0014), then Claude Code's session and agent ids (0018) are the last columns: older
    # lines simply lack them
    assert _USAGE[-3:] == ("user_id", "claude_code_session_id", "claude_code_agent_id")
    line = encode("usage", record(None), Entry(record(None), Cost(1, 2, 3, 4, 5, 6), "global"))
    tag, values, costs, geo = orjson.loads(line)
    old = orjson.dumps([tag, values[:-3], costs, geo]) + b"\n"
    kind, row, rollup = decode(old)
    assert (kind, row["user_id"], row["api_key_id"]) == ("usage", None, "apikey_1")
    assert rollup is not None
    assert rollup.cost == Cost(1, 2, 3, 4, 5, 6)


def test_a_line_from_before_0018_reads_back_without_a_claude_code_session() -> None:
    line = encode("usage", record("user_1"), None)
    tag, values, costs, geo = orjson.loads(line)
    _kind, row, _ = decode(orjson.dumps([tag, values[:-2], costs, geo]) + b"\n")
    assert (row["user_id"], row["claude_code_session_id"], row["claude_code_agent_id"]) == ("user_1", None, None)


def test_a_claude_code_session_survives_the_journal() -> None:
    row = record("user_1") | {"claude_code_session_id": "58e02ad4-bbcf-4827-b50b-5f04001b9987",
                              "claude_code_agent_id": "agent-1"}  # fmt: skip
    _kind, back, _ = decode(encode("usage", row, None))
    assert (back["claude_code_session_id"], back["claude_code_agent_id"]) == (row["claude_code_session_id"], "agent-1")


def test_a_user_tokens_record_keeps_its_user_through_the_journal() -> None:
    row = record("user_1") | {"api_key_id": ""}
    _kind, back, _ = decode(encode("usage", row, None))
    assert (back["user_id"], back["api_key_id"]) == ("user_1", "")
