"""What the recorder's gate does to client-derived strings (``gateway.bounds``): they fit their columns."""

from __future__ import annotations

import json

from orgwarden.gateway.bounds import DETAIL_JSON, DETAIL_STRING, bound_audit, bound_usage
from orgwarden.storage.tables import AuditEvent, UsageRecord


def test_a_usage_records_strings_longer_than_their_columns_are_cut_with_a_marker() -> None:
    row = {"model": "m" * 300, "service_tier": "t" * 40, "inference_geo": "g" * 40, "context_window": "0-200k",
           "speed": "s" * 17, "endpoint": "messages"}  # fmt: skip
    bound_usage(row)
    columns = UsageRecord.__table__.c
    assert row["model"] == "m" * 127 + "…"
    for name in ("model", "service_tier", "inference_geo", "speed"):
        assert len(row[name]) == columns[name].type.length, name
        assert row[name].endswith("…")
    assert row["context_window"] == "0-200k"
    assert row["endpoint"] == "messages"


def test_a_missing_usage_string_is_stored_as_unknown() -> None:
    row = {"model": None, "speed": "standard"}
    bound_usage(row)
    assert row == {
        "model": "unknown",
        "speed": "standard",
        "claude_code_session_id": None,
        "claude_code_agent_id": None,
    }


def test_a_row_without_the_optional_columns_gets_them_as_null_and_long_ones_are_cut() -> None:
    """A producer that predates migration 0018 (a journal line, a batch) leaves the session columns
    out; the recorder's direct INSERT names every column, so the gate fills them in."""
    old = {"model": "claude-sonnet-4-6"}
    bound_usage(old)
    assert (old["claude_code_session_id"], old["claude_code_agent_id"]) == (None, None)
    long = {"model": "claude-sonnet-4-6", "claude_code_session_id": "s" * 500}
    bound_usage(long)
    assert len(long["claude_code_session_id"]) == 64


def test_an_audit_source_ip_that_is_no_address_is_dropped_and_an_address_kept() -> None:
    forged = {"source_ip": "1.2.3.4, " + "x" * 100, "details": {}}
    bound_audit(forged)
    assert forged["source_ip"] is None
    for address in ("127.0.0.1", "2001:db8::1"):
        row = {"source_ip": address, "details": {}}
        bound_audit(row)
        assert row["source_ip"] == address


def test_audit_details_have_their_strings_and_their_size_capped() -> None:
    row = {"details": {"path": "/v1/messages" + "a" * 200_000, "error": "short"}, "actor_id": "x" * 100}
    bound_audit(row)
    assert len(row["details"]["path"]) == DETAIL_STRING
    assert row["details"]["error"] == "short"
    assert len(row["actor_id"]) == AuditEvent.__table__.c["actor_id"].type.length
    many = {"details": {f"header-{i}": "v" * 1000 for i in range(60)}}
    bound_audit(many)
    assert many["details"]["truncated"] is True
    assert len(json.dumps(many["details"])) <= DETAIL_JSON


def test_a_long_list_in_audit_details_keeps_its_first_items_within_the_size_cap() -> None:
    listed = [f"00000000-0000-0000-0000-{n:012d}" for n in range(500)]
    row = {"details": {"method": "POST", "allowed_org_ids": listed}}
    bound_audit(row)
    details = row["details"]
    assert details["truncated"] is True
    assert details["method"] == "POST"
    assert details["allowed_org_ids"] == listed[:125]
    assert len(json.dumps(details)) <= DETAIL_JSON
