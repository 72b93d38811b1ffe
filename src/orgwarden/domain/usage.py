"""Reading usage out of Messages API responses: a JSON body, or an SSE stream seen chunk by chunk.

For a stream, input-side counts (input, cache creation 5m/1h, cache read) come from
``message_start``; ``message_delta`` carries cumulative counts, so the last one seen gives the output
tokens (and may restate the input side, which then wins). Besides those two, ``content_block_delta``
events are read for the size of the content they carry (text, tool-input JSON, thinking, ...).

An answer that ends without its final usage (a stream cut or abandoned before ``message_delta``, a
JSON body cut half-way) is never metered at ``message_start``'s placeholder output count: ``settled``
and ``from_partial`` estimate the output from the content that arrived (``tokens.estimate_output``,
which errs high, capped at the request's ``max_tokens``), take the larger of that and any figure
seen, and mark the result ``estimated``.

An upstream body that cannot be parsed (nested too deeply, broken) yields no usage rather than an
error: metering never fails a response that is already on its way.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from orgwarden.domain.jsonload import NestedTooDeeply, loads
from orgwarden.domain.pricing import TokenUsage
from orgwarden.domain.tokens import estimate_output

log = logging.getLogger("orgwarden.gateway")


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
    estimated: bool = False  # the output count is estimated from the content: the final usage never came


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


def _parse(data: bytes) -> Any:
    """The JSON value of an upstream body or event, or ``None`` if it is not JSON (logged when it
    is too deeply nested: a well-behaved upstream never sends that)."""
    try:
        return loads(data)
    except NestedTooDeeply:
        log.warning("an upstream answer is nested too deeply to parse: its usage is not metered")
        return None
    except ValueError:
        return None


def _delta_payload(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _parse(data)


def _estimated(out: Extracted, content_bytes: int, max_tokens: int | None, input_estimate: int | None) -> Extracted:
    """``out`` with its output tokens at least the estimate for ``content_bytes`` (capped at
    ``max_tokens``: the upstream never generates more) and, if given, its input tokens at least
    ``input_estimate`` (for an answer whose input count never came), marked estimated."""
    estimate = estimate_output(content_bytes)
    if max_tokens is not None and max_tokens > 0:
        estimate = min(estimate, max_tokens)
    usage = out.usage
    input_tokens = max(usage.input_tokens, input_estimate or 0)
    if estimate > usage.output_tokens or input_tokens != usage.input_tokens:
        out.usage = TokenUsage(
            input_tokens, max(estimate, usage.output_tokens), usage.cache_creation_5m, usage.cache_creation_1h,
            usage.cache_read, usage.web_search_requests,
        )  # fmt: skip
    out.estimated = True
    return out


def from_partial(body: bytes, max_tokens: int | None, input_estimate: int | None) -> Extracted:
    """Usage of a Message body the upstream cut half-way: the output estimated from the bytes from
    ``"content"`` on (block framing included: errs high), the input from the caller's estimate of
    the request (``usage`` comes last in a Message, so it is not in the part that came), marked
    estimated."""
    at = body.find(b'"content"')
    return _estimated(Extracted(), len(body) - at if at >= 0 else 0, max_tokens, input_estimate)


def from_message(body: bytes) -> Extracted:
    """Usage of a non-streaming response body (a Message); empty if it is not one."""
    out = Extracted()
    message = _parse(body)
    if isinstance(message, dict) and message.get("type") == "message":
        _apply_message_fields(out, message)
        out.usage = _apply_usage(out.usage, message.get("usage"))
        out.stop_reason = message.get("stop_reason")
        out.completed = True
    return out


_DELTA_EVENT = b"event: content_block_delta\ndata: "
_DELTA_DATA = len(_DELTA_EVENT)


class StreamMeter:
    """Feed it the raw SSE bytes as they pass; read ``result`` at any time, and ``settled`` once the
    stream is over (however it ended)."""

    __slots__ = ("_buffer", "content_bytes", "final", "result", "started")

    def __init__(self) -> None:
        self._buffer = b""
        self.result = Extracted()
        self.content_bytes = 0  # UTF-8 bytes of the content deltas seen
        self.started = False  # message_start seen: the input side is known
        self.final = False  # a message_delta with usage seen: the output count is the upstream's

    def settled(self, max_tokens: int | None, input_estimate: int | None = None) -> Extracted:
        """``result``, or, when no ``message_delta`` usage came, ``result`` with the output count
        estimated from the content seen (and the input from ``input_estimate``, when given: pass
        it when ``message_start`` never came), marked estimated (see the module docstring)."""
        if self.final:
            return self.result
        return _estimated(self.result, self.content_bytes, max_tokens, input_estimate)

    def feed(self, chunk: bytes) -> None:
        if not self._buffer and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 3:
            # One whole event of one data line: how an upstream generating tokens sends them.
            if chunk.startswith(_DELTA_EVENT):
                self._deltas([chunk[_DELTA_DATA:-2]])
            else:
                self._event(chunk[:-2])
            return
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r" in data:  # CR LF line ends (no upstream of ours sends them): event by event
            self._buffer = data
            while True:
                end, size = self._boundary()
                if end < 0:
                    return
                event, self._buffer = self._buffer[:end], self._buffer[end + size :]
                self._event(event)
        # Events end with a blank line. Pieces usually hold several (what arrived together is
        # relayed together), so the whole ones are split off at once and their content deltas,
        # most of a stream, parsed in one orjson call; the rest of the last is kept for the next.
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buffer = data
            return
        self._buffer = data[end + 2 :]
        deltas: list[bytes] = []
        for event in data[:end].split(b"\n\n"):
            if event.startswith(_DELTA_EVENT) and event.find(b"\n", _DELTA_DATA) < 0:  # one data line
                deltas.append(event[_DELTA_DATA:])
            elif event:
                self._event(event)
        if deltas:
            self._deltas(deltas)

    def _deltas(self, datas: list[bytes]) -> None:
        """Count the content of ``content_block_delta`` events' data (orjson alone: only sizes are
        read, so jsonload's exactness is not needed)."""
        payloads: list[Any] | None = None
        if len(datas) > 1:
            with contextlib.suppress(orjson.JSONDecodeError):
                payloads = orjson.loads(b"[" + b",".join(datas) + b"]")
            if payloads is not None and len(payloads) != len(datas):  # a broken event among them
                payloads = None
        if payloads is None:
            payloads = [_delta_payload(data) for data in datas]
        self._count(payloads)

    def _count(self, payloads: list[Any]) -> None:
        """Add the content of parsed ``content_block_delta`` events: the UTF-8 size of every string
        in the delta but its type (text, partial_json, thinking, signature, ...)."""
        size = 0
        for payload in payloads:
            delta = payload.get("delta") if type(payload) is dict else None
            if type(delta) is dict:
                for key, value in delta.items():
                    if key != "type" and type(value) is str:
                        size += len(value) if value.isascii() else len(value.encode())
        self.content_bytes += size

    def _boundary(self) -> tuple[int, int]:
        best = (-1, 0)
        for separator in (b"\n\n", b"\r\n\r\n"):
            at = self._buffer.find(separator)
            if at >= 0 and (best[0] < 0 or at < best[0]):
                best = (at, len(separator))
        return best

    def _event(self, raw: bytes) -> None:
        if b"message_" not in raw and b"_delta" not in raw:
            return  # content_block_start/stop, ping: nothing metering reads
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
        if name not in (b"content_block_delta", b"message_start", b"message_delta") or not data:
            return
        payload = _parse(data[0] if len(data) == 1 else b"\n".join(data))
        if not isinstance(payload, dict):
            return
        if name == b"content_block_delta":
            self._count([payload])
        elif name == b"message_start" and isinstance(payload.get("message"), dict):
            message = payload["message"]
            self.started = True
            _apply_message_fields(self.result, message)
            self.result.usage = _apply_usage(self.result.usage, message.get("usage"))
        elif name == b"message_delta":
            usage = payload.get("usage")
            self.final = self.final or (isinstance(usage, dict) and "output_tokens" in usage)
            self.result.usage = _apply_usage(self.result.usage, usage)
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.result.stop_reason = delta["stop_reason"]
