"""Reading usage out of Messages API responses: a JSON body, or an SSE stream seen chunk by chunk.

For a stream, input-side counts (input, cache creation 5m/1h, cache read) come from
``message_start``; ``message_delta`` carries cumulative counts, so the last one seen gives the output
tokens (and may restate the input side, which then wins). A stream cut short is metered with what
was seen. Only ``message_start`` and ``message_delta`` events are parsed; every other event is skipped
by name, so the scan costs little more than finding event boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orgwarden.domain.jsonload import loads
from orgwarden.domain.pricing import TokenUsage


@dataclass(slots=True)
class Extracted:
    usage: TokenUsage = field(default_factory=TokenUsage)
    message_id: str | None = None
    model: str | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    stop_reason: str | None = None
    completed: bool = False  # message_stop seen (stream) or a full message body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _apply_usage(current: TokenUsage, raw: Any, *, output_only: bool = False) -> TokenUsage:
    if not isinstance(raw, dict):
        return current
    # Built with one constructor call rather than ``dataclasses.replace`` (this runs for every
    # metered answer, and ``replace`` costs several times as much).
    output, input_, read = current.output_tokens, current.input_tokens, current.cache_read
    written_5m, written_1h, searches = current.cache_creation_5m, current.cache_creation_1h, current.web_search_requests
    if "output_tokens" in raw:
        output = _int(raw["output_tokens"])
    if not output_only:
        if raw.get("input_tokens") is not None:
            input_ = _int(raw["input_tokens"])
        if raw.get("cache_read_input_tokens") is not None:
            read = _int(raw["cache_read_input_tokens"])
        creation = raw.get("cache_creation")
        if isinstance(creation, dict):
            written_5m = _int(creation.get("ephemeral_5m_input_tokens"))
            written_1h = _int(creation.get("ephemeral_1h_input_tokens"))
        elif raw.get("cache_creation_input_tokens") is not None:
            total = _int(raw["cache_creation_input_tokens"])
            if total != written_5m + written_1h:  # not a restatement
                written_5m, written_1h = total, 0  # unsplit: counted as 5m
        tools = raw.get("server_tool_use")
        if isinstance(tools, dict) and tools.get("web_search_requests") is not None:
            searches = _int(tools["web_search_requests"])
    return TokenUsage(input_, output, written_5m, written_1h, read, searches)


def _apply_message_fields(out: Extracted, message: dict[str, Any]) -> None:
    out.message_id = message.get("id") or out.message_id
    out.model = message.get("model") or out.model
    usage = message.get("usage")
    if isinstance(usage, dict):
        out.service_tier = usage.get("service_tier") or out.service_tier
        out.inference_geo = usage.get("inference_geo") or out.inference_geo
        out.speed = usage.get("speed") or out.speed


def from_message(body: bytes) -> Extracted:
    """Usage of a non-streaming response body (a Message); empty if it is not one."""
    out = Extracted()
    try:
        message = loads(body)
    except ValueError:
        return out
    if isinstance(message, dict) and message.get("type") == "message":
        _apply_message_fields(out, message)
        out.usage = _apply_usage(out.usage, message.get("usage"))
        out.stop_reason = message.get("stop_reason")
        out.completed = True
    return out


class StreamMeter:
    """Feed it the raw SSE bytes as they pass; read ``result`` at any time."""

    __slots__ = ("_buffer", "result")

    def __init__(self) -> None:
        self._buffer = b""
        self.result = Extracted()

    def feed(self, chunk: bytes) -> None:
        if not self._buffer and b"message_" not in chunk and chunk.endswith((b"\n\n", b"\r\n\r\n")):
            # Whole events, none of them one that metering reads (message_start, _delta, _stop):
            # most chunks of a stream are content deltas, which need no splitting or parsing.
            return
        self._buffer += chunk
        while True:
            end, size = self._boundary()
            if end < 0:
                return
            event, self._buffer = self._buffer[:end], self._buffer[end + size :]
            self._event(event)

    def _boundary(self) -> tuple[int, int]:
        best = (-1, 0)
        for separator in (b"\n\n", b"\r\n\r\n"):
            at = self._buffer.find(separator)
            if at >= 0 and (best[0] < 0 or at < best[0]):
                best = (at, len(separator))
        return best

    def _event(self, raw: bytes) -> None:
        name = b""
        data: list[bytes] = []
        for line in raw.splitlines():
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if name == b"message_stop":
            self.result.completed = True
            return
        if name not in (b"message_start", b"message_delta") or not data:
            return
        try:
            payload = loads(b"\n".join(data))
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if name == b"message_start" and isinstance(payload.get("message"), dict):
            message = payload["message"]
            _apply_message_fields(self.result, message)
            self.result.usage = _apply_usage(self.result.usage, message.get("usage"))
        elif name == b"message_delta":
            self.result.usage = _apply_usage(self.result.usage, payload.get("usage"))
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.result.stop_reason = delta["stop_reason"]
