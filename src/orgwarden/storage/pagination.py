"""Cursor pagination over time-ordered ids: ``after_id`` / ``before_id`` / ``limit``.

Pages are always in ascending id (creation) order. ``after_id`` returns the ``limit`` items right after
the cursor; ``before_id`` the ``limit`` items right before it. ``has_more`` says whether more items lie
beyond the page *in the direction of travel*, which is what the SDK's iterator follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    after_id: str | None = None
    before_id: str | None = None
    limit: int = 20


async def paginate(
    session: AsyncSession, stmt: Select[Any], key: InstrumentedAttribute[str], cursor: Cursor
) -> Page[Any]:
    if cursor.before_id is not None:
        stmt = stmt.where(key < cursor.before_id).order_by(key.desc())
    else:
        if cursor.after_id is not None:
            stmt = stmt.where(key > cursor.after_id)
        stmt = stmt.order_by(key.asc())
    rows = list((await session.scalars(stmt.limit(cursor.limit + 1))).all())
    has_more = len(rows) > cursor.limit
    rows = rows[: cursor.limit]
    if cursor.before_id is not None:
        rows.reverse()
    return Page(rows, has_more)
