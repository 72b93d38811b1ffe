"""A data-plane refusal: status, error type and message, rendered in the Anthropic error envelope."""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A refusal with its envelope; ``extra`` goes into ``error`` (the tenant body's ``error_code``);
    ``headers`` are added to the response (``retry-after``, the rate-limit headers)."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.code, self.extra = status, kind, message, code, extra
        self.headers = headers or []
