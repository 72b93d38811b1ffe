"""The audit log's hash chain: how an event is hashed, and how a chain is checked. Pure, no I/O.

Each organization's events form one chain, numbered ``seq`` 1, 2, 3, … in commit order. An event's
``hash`` is the SHA-256 (hex) of the **canonical JSON** of every stored field of the event but the
hash itself, ``prev_hash`` included; ``prev_hash`` is the hash of the event before it (64 zeros for
seq 1). Changing any field of a stored event, deleting one, or re-ordering them breaks the chain at
that point, and ``ChainWalker`` names the first broken link.

The canonical JSON is what an auditor re-computes from an export, without orgwarden: the object of
the fields below (``occurred_at`` as ``2024-10-30T23:58:27.427722Z``, absent values as ``null``,
``details`` as stored), keys sorted, no whitespace (``","`` and ``":"``), non-ASCII escaped as
``\\uXXXX``, encoded as UTF-8 — in Python ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``.
An API or export record is exactly this object plus ``"type"`` and ``"hash"``.

The chain proves the log is unaltered *as far as its newest event*: someone able to rewrite the
database could also re-hash every event after the one they changed, and move the chain head. Keep
the head hash that ``orgwarden audit verify`` prints somewhere else (a ticket, a SIEM) to pin the log
up to that point.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

GENESIS = "0" * 64
"""``prev_hash`` of an organization's first event."""

HASHED_FIELDS = (
    "id",
    "organization_id",
    "seq",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "workspace_id",
    "request_id",
    "source_ip",
    "outcome",
    "details",
    "prev_hash",
)
"""Every stored column of an event but ``hash``: all of them are covered by it."""


def timestamp(value: datetime) -> str:
    """``occurred_at`` as hashed (and rendered): RFC 3339, microseconds, ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalized(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """``details`` as it reads back from the database (a JSON round trip: tuples become lists, keys
    strings), so that the hash computed before the insert is the hash of what is stored."""
    result: dict[str, Any] = json.loads(json.dumps(dict(details or {}), allow_nan=False))
    return result


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes an event's hash is computed over (see the module docstring)."""
    fields: dict[str, Any] = {name: event.get(name) for name in HASHED_FIELDS}
    occurred = fields["occurred_at"]
    if isinstance(occurred, datetime):
        fields["occurred_at"] = timestamp(occurred)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


Problem = Literal["hash_mismatch", "prev_hash_mismatch", "seq_gap", "seq_repeated", "head_mismatch"]


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link: the event where the chain stops holding (``None`` when the break is
    in the chain head rather than at an event), its seq, the kind of problem and a sentence."""

    event_id: str | None
    seq: int
    problem: Problem
    message: str


@dataclass(frozen=True, slots=True)
class Head:
    """The chain head as stored: the last seq of the organization and that event's hash."""

    seq: int
    hash: str


class ChainWalker:
    """Feed it an organization's events in seq order (``check``), then ``finish`` with the stored
    head; the first break is returned and kept in ``broken``, after which nothing more is checked."""

    def __init__(self) -> None:
        self.count = 0
        self.broken: ChainBreak | None = None
        self._seq = 0
        self._hash = GENESIS
        self._id: str | None = None

    def check(self, event: Mapping[str, Any]) -> ChainBreak | None:
        if self.broken is not None:
            return self.broken
        self.count += 1
        event_id, seq = str(event["id"]), int(event["seq"])
        expected = self._seq + 1
        if seq < expected:
            return self._break(
                event_id, seq, "seq_repeated",
                f"seq {seq} comes again (expected {expected}): the chain forks or events were re-numbered",
            )  # fmt: skip
        if seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
            return self._break(event_id, seq, "seq_gap", f"{missing} missing before this event: an event was deleted")
        if event_hash(event) != event["hash"]:
            return self._break(
                event_id, seq, "hash_mismatch",
                "hash mismatch: the stored fields no longer match the event's hash (the event was altered)",
            )  # fmt: skip
        if event["prev_hash"] != self._hash:
            before = f"seq {self._seq} ({self._id})" if self._id else "the start of the chain"
            return self._break(
                event_id, seq, "prev_hash_mismatch",
                f"prev_hash mismatch: it is not the hash of {before}; that event was altered and re-hashed, "
                "or this one was re-linked",
            )  # fmt: skip
        self._seq, self._hash, self._id = seq, str(event["hash"]), event_id
        return None

    def finish(self, head: Head | None) -> ChainBreak | None:
        """Check the stored head against the last event walked: a head beyond it means events at the
        end were deleted (which no link between events can show)."""
        if self.broken is not None:
            return self.broken
        if head is None:
            if self._seq == 0:
                return None
            return self._break(None, self._seq, "head_mismatch", "the chain head is missing (it was deleted)")
        if head.seq > self._seq:
            missing = f"seq {head.seq}" if head.seq == self._seq + 1 else f"seq {self._seq + 1} to {head.seq}"
            return self._break(
                None, self._seq + 1, "seq_gap", f"{missing} missing at the end of the chain: events were deleted"
            )
        if head.seq < self._seq or head.hash != self._hash:
            return self._break(
                self._id, self._seq, "head_mismatch",
                f"the chain head (seq {head.seq}, hash {head.hash}) does not match the last event: it was altered",
            )  # fmt: skip
        return None

    @property
    def last(self) -> Head:
        return Head(self._seq, self._hash)

    def _break(self, event_id: str | None, seq: int, problem: Problem, message: str) -> ChainBreak:
        self.broken = ChainBreak(event_id, seq, problem, message)
        return self.broken
