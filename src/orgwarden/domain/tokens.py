"""A quick, deterministic token estimate of a Messages request, without a tokenizer.

Used where a count is needed before the upstream answers (rate-limit reservations, the simulator's
usage). About four characters a token, plus a few tokens of framing per message, as Anthropic's own
rule of thumb; the upstream's real count replaces it once known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_chars(v) for k, v in value.items() if k not in ("type", "cache_control", "role"))
    return 0


def estimate(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def estimate_request(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages request: system, messages and tools."""
    messages = body.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    chars = _chars(body.get("system")) + _chars(messages) + _chars(body.get("tools"))
    return estimate(chars) + TOKENS_PER_MESSAGE * count + 1
