"""A quick, deterministic token estimate of a Messages request, without a tokenizer.

Used where a count is needed before the upstream answers (rate-limit reservations, the simulator's
usage). About four characters a token, plus a few tokens of framing per message, as Anthropic's own
rule of thumb; the upstream's real count replaces it once known.

``estimate_output`` is the other direction: the output tokens of content an answer relayed when the
upstream's own count never came (a stream cut or abandoned before ``message_delta``, a JSON answer
cut half-way). It must not undercount, since it is what the request is charged, so it errs high:
one token per ``OUTPUT_BYTES_PER_TOKEN`` (3) bytes of UTF-8 content. English averages about four
characters a token, code about three, and a CJK character (three bytes in UTF-8) is about one token;
the simulator's answers (tokens of 1-10 characters, ``gateway.sim_reply``) come out at 1.5-2 times
their real count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3


_UNCOUNTED = frozenset(("type", "cache_control", "role"))  # keys whose values are not text the model reads


def _chars(value: Any) -> int:
    """Characters of every string in ``value``. Loops rather than ``sum`` over generators, and strings
    counted without a call of their own: this runs on every request a token limit applies to."""
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, list):
        for item in value:
            total += len(item) if isinstance(item, str) else _chars(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _UNCOUNTED:
                total += len(item) if isinstance(item, str) else _chars(item)
    return total


def estimate(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


OUTPUT_BYTES_PER_TOKEN = 3


def estimate_output(content_bytes: int) -> int:
    """Output tokens of ``content_bytes`` bytes of generated content (text, tool input JSON,
    thinking), rounded up: an upper-side estimate, see the module docstring."""
    return -(-content_bytes // OUTPUT_BYTES_PER_TOKEN)


def estimate_request(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages request: system, messages and tools."""
    messages = body.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    chars = _chars(messages)
    system, tools = body.get("system"), body.get("tools")
    if system is not None:  # (mostly absent)
        chars += _chars(system)
    if tools is not None:
        chars += _chars(tools)
    return estimate(chars) + TOKENS_PER_MESSAGE * count + 1
