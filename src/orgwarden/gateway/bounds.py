"""Bounding what the recorder stores: every client-derived string fits its column before it is queued.

One bad request must not make a batch insert fail (and, before this, wedge recording for everyone
on PostgreSQL, where ``VARCHAR(n)`` is enforced). So at the recorder's gate, the one place every
producer passes:

* a usage record's strings (``model``, ``service_tier``, ``inference_geo``, ``context_window``,
  ``speed``, ``endpoint``) longer than their column are **cut** to it, the last kept character
  replaced by ``…`` to show the value was longer; a missing value becomes ``unknown`` (Claude
  Code's session and agent ids are cut the same way, and stay null when missing). The usage
  rollups have the same column sizes and see the same (cut) value, so reports group it the same;
* an audit event's ``source_ip`` is kept only when it parses as an IP address
  (``ipaddress.ip_address``), else stored NULL; its other short columns are cut like the above;
* an audit event's ``details``: each string value (at any depth, keys included) is cut to
  ``DETAIL_STRING`` characters, lists to ``DETAIL_ITEMS`` items; while the whole serializes to more
  than ``DETAIL_JSON`` bytes its longest top-level list is halved (its first items kept, e.g. the
  first of 500 allowed organizations) and ``"truncated": true`` added; if that is not enough, it is
  replaced by ``{"truncated": true, "json_bytes": N}``.

Rows are changed in place (they belong to the recorder once offered).
"""

from __future__ import annotations

import ipaddress
import json
from itertools import islice
from typing import Any, cast

from sqlalchemy import String, Table

from orgwarden.storage.tables import AuditEvent, UsageRecord

MARK = "…"
UNKNOWN = "unknown"
DETAIL_STRING = 1024
DETAIL_ITEMS = 1000
DETAIL_JSON = 8192
_DEPTH = 8


def _lengths(table: Any, names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    columns = cast(Table, table).c
    found = []
    for name in names:
        kind = columns[name].type
        assert isinstance(kind, String), name
        assert kind.length is not None, name
        found.append((name, kind.length))
    return tuple(found)


USAGE_STRINGS = _lengths(
    UsageRecord.__table__, ("model", "service_tier", "inference_geo", "context_window", "speed", "endpoint")
)
# Nullable client strings (Claude Code's session and agent ids): cut like the above, null kept.
USAGE_OPTIONAL_STRINGS = _lengths(UsageRecord.__table__, ("claude_code_session_id", "claude_code_agent_id"))
AUDIT_STRINGS = _lengths(
    AuditEvent.__table__, ("actor_type", "actor_id", "action", "target_type", "target_id", "request_id", "outcome")
)


def cut(value: str, length: int) -> str:
    """``value`` if it fits ``length`` characters, else its start and ``…`` in exactly ``length``."""
    return value if len(value) <= length else value[: length - 1] + MARK


def bound_usage(row: dict[str, Any]) -> None:
    """Fit a usage record's client-derived strings to their columns (in place). Cheap when they fit
    (a length check each): this runs for every metered request."""
    for name, length in USAGE_STRINGS:
        if name not in row:
            continue
        value = row[name]
        if type(value) is not str:
            value = row[name] = UNKNOWN if value is None else str(value)
        if len(value) > length:
            row[name] = cut(value, length)
    for name, length in USAGE_OPTIONAL_STRINGS:
        value = row.get(name)
        if value is None:
            row[name] = None  # a producer that predates the column (a journal line, a batch) leaves it out
        elif type(value) is not str or len(value) > length:
            row[name] = cut(str(value), length)


def bound_audit(row: dict[str, Any]) -> None:
    """Fit a data-plane audit event to its columns (in place): see the module docstring."""
    ip = row.get("source_ip")
    if ip is not None:
        row["source_ip"] = _address(ip)
    for name, length in AUDIT_STRINGS:
        value = row.get(name)
        if isinstance(value, str) and len(value) > length:
            row[name] = cut(value, length)
    if "details" in row:
        row["details"] = bound_details(row["details"])


def _address(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def bound_details(details: Any) -> dict[str, Any]:
    """``details`` with strings, lists and depth capped, and the whole capped at ``DETAIL_JSON`` bytes."""
    if not isinstance(details, dict):
        details = {} if details is None else {"value": details}
    capped = cast(dict[str, Any], _cap(details, 0))
    size = first = _size(capped)
    while size > DETAIL_JSON:
        lists = [(len(value), name) for name, value in capped.items() if isinstance(value, list) and len(value) > 1]
        if not lists:
            return {"truncated": True, "json_bytes": first}
        _, name = max(lists)
        capped[name] = capped[name][: len(capped[name]) // 2]
        capped["truncated"] = True
        size = _size(capped)
    return capped


def _size(details: dict[str, Any]) -> int:
    return len(json.dumps(details, default=str).encode())


def _cap(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return cut(value, DETAIL_STRING)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _DEPTH:
        return "…"
    if isinstance(value, dict):
        items = islice(value.items(), DETAIL_ITEMS)
        return {cut(str(key), DETAIL_STRING): _cap(item, depth + 1) for key, item in items}
    if isinstance(value, list | tuple):
        return [_cap(item, depth + 1) for item in islice(value, DETAIL_ITEMS)]
    return cut(str(value), DETAIL_STRING)
