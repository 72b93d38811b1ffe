"""A built-in, Anthropic-shaped upstream for offline use, demos, tests and benchmarks.

It answers ``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models``
and ``GET /v1/models/{id}`` like the real API: ``msg_`` ids, usage derived from the request
(``count_tokens`` gives exactly the ``input_tokens`` plus cache tokens of the same request's usage),
every SSE event with its ``event:`` line, ``thinking_delta`` / ``signature_delta`` /
``input_json_delta`` events for thinking and tool use, cumulative usage in ``message_delta`` equal to
the JSON answer's. What it answers (text, tool use, thinking, stop reasons) is decided by
``sim_reply``, whose docstring gives the rules; the tool inputs come from ``sim_schema``.

How it behaves is steered per request by headers (``anthropic-*`` headers pass through orgwarden, so
these work end to end through the gateway), or for every request by settings:

* ``anthropic-simulator-fault: 429 | 500 | 529 | timeout | cut`` (setting ``ORGWARDEN_SIMULATOR_FAULT``)
  answers with that error envelope (429 with ``retry-after``), never answers (``timeout``), or cuts
  a stream half-way (``cut``; for JSON, the body is cut);
* ``anthropic-simulator-retry-after: N``: the seconds a simulated 429 or 529 gives in ``retry-after``
  (default 1 for 429, none for 529);
* ``anthropic-simulator-latency-ms: N`` (setting ``ORGWARDEN_SIMULATOR_LATENCY_MS``): wait N ms
  before answering (at most ``MAX_LATENCY_MS``);
* ``anthropic-simulator-reply: TEXT`` (setting ``ORGWARDEN_SIMULATOR_REPLY``): answer with this text
  (percent-encoded UTF-8 is decoded, so any text fits in a header) instead of generated sentences;
* ``anthropic-simulator-output-tokens: N`` makes a generated answer N tokens long (default 16,
  capped by ``max_tokens``, then ``stop_reason`` is ``max_tokens``);
* ``anthropic-simulator-cache: read`` reports content marked with ``cache_control`` as cache reads
  instead of cache writes.

A header wins over the setting. The streaming token rate is a setting
(``ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND``; 0 means as fast as possible). A scripting header with a
value it cannot use is refused with 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from starlette.types import Receive, Scope, Send

from orgwarden.domain.catalog import Catalog, Model
from orgwarden.domain.tokens import estimate, estimate_request
from orgwarden.gateway.sim_reply import DEFAULT_OUTPUT_TOKENS, Block, Refused, Reply, plan
from orgwarden.gateway.simulator_batches import SimulatedBatches, is_batches_path
from orgwarden.gateway.simulator_files import SimulatorFiles

__all__ = ["DEFAULT_OUTPUT_TOKENS", "FAULTS", "MAX_LATENCY_MS", "Simulator"]

FAULTS = ("429", "500", "529", "timeout", "cut")
MAX_LATENCY_MS = 600_000
MAX_OUTPUT_TOKENS = 1_000_000
MAX_REPLY_CHARS = 100_000
_ERRORS = {
    "429": ("rate_limit_error", "simulated rate limit"),
    "500": ("api_error", "simulated internal error"),
    "529": ("overloaded_error", "simulated overload"),
}
_DELTA_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens",
                "server_tool_use")  # fmt: skip


def _envelope(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}


class _Scripted(Exception):
    """An answer decided before the request is read: an error status, its envelope and headers."""

    def __init__(self, status: int, kind: str, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, _envelope(kind, message), headers or []


def _bad_header(name: str, value: str, expected: str) -> _Scripted:
    return _Scripted(400, "invalid_request_error", f"{name}: {value[:40]!r} is not {expected}")


def _number(headers: Mapping[str, str], name: str, high: int) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > high:
        raise _bad_header(name, value, f"an integer from 0 to {high}")
    return int(value)


def _cached_chars(value: Any) -> tuple[int, int]:
    """Characters of content blocks marked with ``cache_control``: (5m, 1h)."""
    five = hour = 0
    if isinstance(value, list):
        for item in value:
            a, b = _cached_chars(item)
            five, hour = five + a, hour + b
    elif isinstance(value, dict):
        control = value.get("cache_control")
        if isinstance(control, dict):
            text = json.dumps({k: v for k, v in value.items() if k not in ("cache_control", "type")})
            if control.get("ttl") == "1h":
                hour += len(text)
            else:
                five += len(text)
        else:
            for key, item in value.items():
                if key != "cache_control":
                    a, b = _cached_chars(item)
                    five, hour = five + a, hour + b
    return five, hour


def _seed(request: Mapping[str, Any]) -> int:
    """A hash of the request's last message: the same request (streamed or not) gets the same words,
    and hashing one message rather than the whole request keeps the benchmark's path cheap."""
    messages = request.get("messages")
    return zlib.crc32(json.dumps(messages[-1]).encode()) if isinstance(messages, list) and messages else 0


class Simulator:
    """The simulator as an ASGI app (served in process, or on its own port by ``orgwarden simulator``)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        latency_ms: float = 0,
        tokens_per_second: float = 0,
        fault: str = "",
        reply: str | None = None,
        batch_seconds: float = 2,
    ) -> None:
        self.catalog = catalog
        self.latency = latency_ms / 1000
        self.token_delay = 1 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.files = SimulatorFiles()
        self.batches = SimulatedBatches(self.answer_message, seconds=batch_seconds)  # simulator_batches.py
        self.fault = fault
        self.reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/v1/files"):  # the Files API: simulator_files.py
            await self.files(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            fault = self._fault(headers)
            latency = _number(headers, "anthropic-simulator-latency-ms", MAX_LATENCY_MS)
            if fault in _ERRORS:
                raise self._error(fault, headers)
        except _Scripted as scripted:
            await self._send(send, scripted.status, scripted.body, scripted.headers)
            return
        if fault == "timeout":
            await asyncio.sleep(3600)
        method, path = scope["method"], scope["path"]
        delay = self.latency if latency is None else latency / 1000
        if delay:
            await asyncio.sleep(delay)
        if is_batches_path(path):
            await self.batches.serve(send, method, path, scope.get("query_string", b""), headers, body)
            return
        if method == "GET" and path == "/v1/models":
            await self._send(send, 200, self._models())
        elif method == "GET" and path.startswith("/v1/models/"):
            model = self.catalog.find(path.removeprefix("/v1/models/"))
            if model is None:
                await self._send(send, 404, _envelope("not_found_error", f"model: {path.rsplit('/', 1)[-1]}"))
            else:
                await self._send(send, 200, self._model(model))
        elif method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            await self._messages(send, path, body, headers, fault)
        else:
            await self._send(send, 404, _envelope("not_found_error", f"no such endpoint: {method} {path}"))

    def _fault(self, headers: Mapping[str, str]) -> str:
        fault = headers.get("anthropic-simulator-fault", self.fault)
        if fault and fault not in FAULTS:
            raise _bad_header("anthropic-simulator-fault", fault, "one of " + ", ".join(FAULTS))
        return fault

    @staticmethod
    def _error(fault: str, headers: Mapping[str, str]) -> _Scripted:
        retry = _number(headers, "anthropic-simulator-retry-after", 86_400)
        if retry is None and fault == "429":
            retry = 1
        extra = [(b"retry-after", str(retry).encode())] if retry is not None else []
        return _Scripted(int(fault), *_ERRORS[fault], extra)

    async def _messages(self, send: Send, path: str, raw: bytes, headers: dict[str, str], fault: str) -> None:
        try:
            request = json.loads(raw)
        except ValueError:
            await self._send(send, 400, _envelope("invalid_request_error", "request body is not valid JSON"))
            return
        except RecursionError:
            await self._send(send, 400, _envelope("invalid_request_error", "request body is nested too deeply"))
            return
        if path.endswith("count_tokens"):
            status, answer = self._count(request)
            await self._send(send, status, answer)
            return
        try:
            model, reply, usage = self._answer(request, headers)
        except _Scripted as scripted:
            await self._send(send, scripted.status, scripted.body, scripted.headers)
            return
        message_id = "msg_01" + secrets.token_hex(11)
        if request.get("stream") is True:
            await self._stream(send, message_id, model.id, reply, usage, cut=fault == "cut")
            return
        body = json.dumps(self._message(message_id, model.id, reply, usage)).encode()
        await self._send_bytes(send, 200, body[: len(body) // 2] if fault == "cut" else body)

    def answer_message(self, request: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The non-streamed answer to a Messages ``request`` as the simulator gives it over HTTP, with
        the scripting ``headers`` (lower-case names) applied: (status, Message or error envelope).
        A scripted 429/500/529 comes back as that error; ``timeout``, ``cut`` and latency do not apply."""
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            fault = self._fault(lower)
            if fault in _ERRORS:
                raise self._error(fault, lower)
            model, reply, usage = self._answer(request, lower)
        except _Scripted as scripted:
            return scripted.status, scripted.body
        return 200, self._message("msg_01" + secrets.token_hex(11), model.id, reply, usage)

    def _checked(self, request: Any) -> Model:
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            raise _Scripted(400, "invalid_request_error", "model: field required")
        model = self.catalog.find(request["model"])
        if model is None:
            raise _Scripted(404, "not_found_error", f"model: {request['model'][:200]}")
        return model

    def _count(self, request: Any) -> tuple[int, dict[str, Any]]:
        try:
            self._checked(request)
        except _Scripted as scripted:
            return scripted.status, scripted.body
        return 200, {"input_tokens": estimate_request(request)}

    def _answer(self, request: Any, headers: Mapping[str, str]) -> tuple[Model, Reply, dict[str, Any]]:
        model = self._checked(request)
        max_tokens = request.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _Scripted(400, "invalid_request_error", "max_tokens: must be a positive integer")
        length = _number(headers, "anthropic-simulator-output-tokens", MAX_OUTPUT_TOKENS)
        canned = headers.get("anthropic-simulator-reply")
        if canned is not None:
            canned = unquote(canned)[:MAX_REPLY_CHARS]
        if length is not None:  # no more than max_tokens + 1: enough to stop at max_tokens
            length = max(1, min(length, max_tokens + 1))
        try:
            reply = plan(request, seed=_seed(request), length=length, canned=canned or self.reply)
        except Refused as refused:
            raise _Scripted(400, "invalid_request_error", str(refused)) from None
        cache_read = headers.get("anthropic-simulator-cache") == "read"
        return model, reply, self._usage(request, estimate_request(request), reply.output_tokens, cache_read)

    @staticmethod
    def _message(message_id: str, model: str, reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block.as_json() for block in reply.blocks],
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
            "usage": usage,
        }

    def _usage(self, request: dict[str, Any], total_input: int, output: int, cache_read: bool) -> dict[str, Any]:
        five_chars, hour_chars = _cached_chars([request.get("system"), request.get("messages"), request.get("tools")])
        five, hour = estimate(five_chars), estimate(hour_chars)
        cached = min(five + hour, total_input)
        raw_tools = request.get("tools")
        tools: list[Any] = raw_tools if isinstance(raw_tools, list) else []
        searches = len([t for t in tools if isinstance(t, dict) and str(t.get("type", "")).startswith("web_search")])
        geo = request.get("inference_geo")
        return {
            "input_tokens": total_input - cached,
            "cache_creation_input_tokens": 0 if cache_read else cached,
            "cache_read_input_tokens": cached if cache_read else 0,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0 if cache_read else min(five, cached),
                "ephemeral_1h_input_tokens": 0 if cache_read else cached - min(five, cached),
            },
            "output_tokens": output,
            "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0},
            "service_tier": "standard",
            "inference_geo": geo if isinstance(geo, str) else "global",
        }

    async def _stream(
        self, send: Send, message_id: str, model: str, reply: Reply, usage: dict[str, Any], *, cut: bool
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            }
        )

        async def event(name: str, data: dict[str, Any], more: bool = True) -> None:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

        start_usage = {**usage, "output_tokens": 1}
        start: dict[str, Any] = {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage,
        }  # fmt: skip
        await event("message_start", {"type": "message_start", "message": start})
        sent, cut_at = 0, reply.output_tokens // 2 if cut else -1
        for index, block in enumerate(reply.blocks):
            await event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": _opening(block)})  # fmt: skip
            if index == 0:
                await event("ping", {"type": "ping"})
            head, tail = _delta_frame(block, index)  # each delta event: head + the piece as JSON + tail
            for piece in block.pieces:
                if sent == cut_at:
                    raise ConnectionResetError("simulated upstream cut")
                sent += 1
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if not block.hidden:
                    body = head + json.dumps(piece).encode() + tail
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            if block.kind == "thinking":
                await event("content_block_delta", {"type": "content_block_delta", "index": index,
                            "delta": {"type": "signature_delta", "signature": block.signature}})  # fmt: skip
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
        delta_usage = {k: usage[k] for k in _DELTA_USAGE}
        await event("message_delta", {"type": "message_delta", "usage": delta_usage, "delta": {
            "stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}})  # fmt: skip
        await event("message_stop", {"type": "message_stop"}, more=False)

    def _model(self, model: Model) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model.id,
            "display_name": model.display_name,
            "created_at": model.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lifecycle": "active",
            "max_input_tokens": model.max_input_tokens,
            "max_tokens": model.max_tokens,
        }

    def _models(self) -> dict[str, Any]:
        data = [self._model(m) for m in sorted(self.catalog.models, key=lambda m: m.created_at, reverse=True)]
        return {"data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False}

    @classmethod
    async def _send(
        cls, send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await cls._send_bytes(send, status, json.dumps(body).encode(), headers)

    @staticmethod
    async def _send_bytes(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": body})


def _opening(block: Block) -> dict[str, Any]:
    """A block as ``content_block_start`` shows it: empty, to be filled by deltas."""
    if block.kind == "tool_use":
        return {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "text", "text": ""}


_DELTAS = {"tool_use": ("input_json_delta", "partial_json"), "thinking": ("thinking_delta", "thinking"),
           "text": ("text_delta", "text")}  # fmt: skip


def _delta_frame(block: Block, index: int) -> tuple[bytes, bytes]:
    """The bytes around the piece in a ``content_block_delta`` event of ``block``: the event is the
    same as ``json.dumps`` of its dict, built without dumping the dict once per token."""
    kind, field = _DELTAS[block.kind]
    head = f'event: content_block_delta\ndata: {{"type": "content_block_delta", "index": {index}, "delta": '
    return (head + f'{{"type": "{kind}", "{field}": ').encode(), b"}}\n\n"
