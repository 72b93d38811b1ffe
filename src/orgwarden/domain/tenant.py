"""Tenant restrictions: parsing the ``anthropic-allowed-org-ids`` headers a corporate proxy injects.

The rules (spec file 000 and its current public revision):

* no header at all: no restriction;
* ``anthropic-allowed-org-ids: <uuid>,<uuid>,...``: comma-separated, no spaces;
* a long list may be split: the base header ends with ``;n=K`` (1 <= K <= 10) and the rest of the ids
  come in ``anthropic-allowed-org-ids1`` ... ``anthropic-allowed-org-ids{K-1}``; every declared slot
  must be present and no other slot may be; at most 500 ids in all;
* the same header name twice (in any letter case) is refused as "Multiple ..."; anything else that
  breaks the grammar as "Malformed ...".

This works on raw header pairs (as ASGI gives them, every copy kept) on purpose: a framework's
``headers.get`` returns one copy or joins them, which would hide exactly the duplicates a proxy that
appends instead of overwriting produces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

HEADER: Final = "anthropic-allowed-org-ids"
MAX_SLOTS: Final = 10
MAX_IDS: Final = 500
_HEADER_BYTES: Final = HEADER.encode()
_HEADER_LENGTH: Final = len(HEADER)
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_COUNT: Final = re.compile(r"^n=([0-9]{1,2})$")
_SPACE: Final = re.compile(r"\s")  # the characters str.isspace() accepts (both use Py_UNICODE_ISSPACE)
# The ids a lone base header's value allows, by that value: a header passes the rules or not on its
# own, so a value seen before needs no parsing (its UUID checks were most of a request's share).
# Bounded (values of up to 1 KiB, 256 of them, cleared when full: this runs before authentication),
# so a client sending a new value each time only loses the shortcut.
_parsed: dict[bytes, frozenset[str]] = {}
_PARSED_SIZE: Final = 256
_PARSED_VALUE: Final = 1024


class TenantHeaderError(ValueError):
    """A syntax error in the headers; ``kind`` picks the message family (both are 400s)."""

    def __init__(self, kind: Literal["multiple", "malformed"], detail: str) -> None:
        prefix = "Multiple" if kind == "multiple" else "Malformed"
        super().__init__(f"{prefix} anthropic-allowed-org-ids headers: {detail}")
        self.kind = kind


def _slots(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[int, bytes]:
    """Slot number (0 for the base header) -> raw value, refusing duplicates."""
    slots: dict[int, bytes] = {}
    for raw_name, raw_value in raw_headers:
        if len(raw_name) < _HEADER_LENGTH:  # most headers: cheaper than lowering every name
            continue
        name = raw_name.lower()
        if name == _HEADER_BYTES:
            slot = 0
        elif not name.startswith(_HEADER_BYTES):
            continue
        else:
            suffix = name[_HEADER_LENGTH:]
            if not suffix.isdigit():
                continue  # another header that merely shares the prefix
            if suffix.startswith(b"0"):  # "...ids0" would shadow the base header, "...ids01" slot 1
                label = raw_name.decode("latin-1").lower()
                raise TenantHeaderError("malformed", f"{label} is not a valid slot name")
            slot = int(suffix)
        if slot in slots:
            label = raw_name.decode("latin-1").lower()
            raise TenantHeaderError("multiple", f"{label} appears more than once")
        slots[slot] = raw_value
    return slots


def _ids(value: str, label: str) -> list[str]:
    if value == "":
        raise TenantHeaderError("malformed", f"{label} is empty")
    if _SPACE.search(value):
        raise TenantHeaderError("malformed", f"{label} contains white space")
    ids = value.split(",")
    for item in ids:
        if item == "":
            raise TenantHeaderError("malformed", f"{label} has an empty element")
        if not _UUID.match(item):
            raise TenantHeaderError("malformed", f"{label} has {item[:40]!r}, which is not a UUID")
    return [item.lower() for item in ids]


def parse_allowed_org_ids(raw_headers: Iterable[tuple[bytes, bytes]]) -> frozenset[str] | None:
    """The allowed organization ids, or ``None`` when no restriction header is present."""
    raw_slots = _slots(raw_headers)
    if not raw_slots:
        return None
    single = raw_slots.get(0) if len(raw_slots) == 1 else None
    if single is not None:
        known = _parsed.get(single)
        if known is not None:
            return known
    slots = {slot: value.decode("latin-1") for slot, value in raw_slots.items()}
    allowed = _parse(slots)
    if single is not None and len(single) <= _PARSED_VALUE:  # a proxy sends the same on every request
        if len(_parsed) >= _PARSED_SIZE:
            _parsed.clear()
        _parsed[single] = allowed
    return allowed


def _parse(slots: dict[int, str]) -> frozenset[str]:
    if 0 not in slots:
        first = min(slots)
        raise TenantHeaderError("malformed", f"{HEADER}{first} is present without {HEADER}")
    base = slots[0]
    declared = 1
    if ";" in base:
        base, _, count = base.partition(";")
        match = _COUNT.match(count)
        if not match:
            raise TenantHeaderError("malformed", f"{count!r} is not a slot count like n=2")
        declared = int(match.group(1))
        if not 1 <= declared <= MAX_SLOTS:
            raise TenantHeaderError("malformed", f"n={declared} is outside 1..{MAX_SLOTS}")
    for slot in sorted(slots):
        if slot >= declared:
            raise TenantHeaderError("malformed", f"{HEADER}{slot} is present but only {declared} slot(s) are declared")
    missing = [slot for slot in range(1, declared) if slot not in slots]
    if missing:
        raise TenantHeaderError("malformed", f"{HEADER}{missing[0]} is declared by n={declared} but missing")
    allowed: list[str] = _ids(base, HEADER)
    for slot in range(1, declared):
        allowed.extend(_ids(slots[slot], f"{HEADER}{slot}"))
    if len(allowed) > MAX_IDS:
        raise TenantHeaderError("malformed", f"{len(allowed)} organization ids exceed the limit of {MAX_IDS}")
    return frozenset(allowed)


def is_allowed(organization_id: str, allowed: frozenset[str] | None) -> bool:
    return allowed is None or organization_id.lower() in allowed
