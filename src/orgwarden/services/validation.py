"""Turning the domain's ``ValueError``s into 400s, and other small checks shared by services."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from orgwarden.errors import InvalidRequest

T = TypeVar("T")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def checked(check: Callable[..., T], *args: object) -> T:
    try:
        return check(*args)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def normalize_email(email: str, field: str = "email") -> str:
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise InvalidRequest(f"{field}: {email!r} is not a valid email address")
    return value


def one_of(value: str, allowed: frozenset[str], field: str, *, refused: str | None = None) -> str:
    if refused is not None and value == refused:
        raise InvalidRequest(f"{field}: cannot be {refused!r}")
    if value not in allowed:
        options = ", ".join(repr(v) for v in sorted(allowed))
        raise InvalidRequest(f"{field}: {value!r} is not one of {options}")
    return value
