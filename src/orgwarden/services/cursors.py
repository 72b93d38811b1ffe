"""Opaque ``page`` cursors for the lists that page with ``page`` / ``next_page`` (rate limits, spend
limits, the effective spend report), as Anthropic's do.

A cursor names the last item of the page it follows (an entry, limit or API key id), so a page
starts right after it even if items were added or removed in between: no repeats, no gaps among the
items that stayed. It is base64url so that clients treat it as opaque, and it is checked on the way
back in, so a made-up value is a 400 naming ``page`` rather than a silent empty list.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from orgwarden.errors import InvalidRequest

T = TypeVar("T")
_PREFIX = "ow1:"


@dataclass(frozen=True, slots=True)
class CursorPage(Generic[T]):
    items: Sequence[T]
    next_page: str | None


def encode(last: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + last).encode()).decode().rstrip("=")


def decode(page: str | None) -> str | None:
    """The position a ``page`` cursor names (``None`` for the first page)."""
    if page is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(_PREFIX) or len(raw) == len(_PREFIX):
        raise InvalidRequest(f"page: {page!r} is not a cursor from this list (use next_page of a previous response)")
    return raw[len(_PREFIX) :]


def window(
    items: Sequence[T], key_of: Callable[[T], str], order: Sequence[str], after: str | None, limit: int | None
) -> CursorPage[T]:
    """A page of an in-memory list kept in a fixed ``order`` of keys: the items after the key
    ``after``, at most ``limit`` of them (all when ``None``). ``order`` is the *unfiltered* order, so
    that a cursor stays valid when a filter, or a change, leaves its own item out."""
    rank = {k: i for i, k in enumerate(order)}
    rest = list(items)
    if after is not None:
        if after not in rank:
            raise InvalidRequest("page: the cursor does not belong to this list (use next_page of a previous response)")
        rest = [item for item in rest if rank[key_of(item)] > rank[after]]
    if limit is None or len(rest) <= limit:
        return CursorPage(rest, None)
    return CursorPage(rest[:limit], encode(key_of(rest[limit - 1])))
