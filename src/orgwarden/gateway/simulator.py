"""A built-in, Anthropic-shaped upstream for offline use, demos, tests and benchmarks.

It answers ``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models``
and ``GET /v1/models/{id}`` like the real API: ``msg_`` ids, usage derived from the request, every SSE
event with its ``event:`` line, cumulative usage in ``message_delta``.

How it behaves is steered per request by headers (``anthropic-*`` headers pass through orgwarden, so
these work end to end through the gateway):

* ``anthropic-simulator-fault: 429 | 500 | 529 | timeout | cut`` answers with that error envelope,
  never answers (``timeout``), or cuts a stream half-way (``cut``; for JSON, the body is cut);
* ``anthropic-simulator-output-tokens: N`` makes the answer N tokens long (default 16, capped by
  ``max_tokens``);
* ``anthropic-simulator-cache: read`` reports content marked with ``cache_control`` as cache reads
  instead of cache writes.

Latency before the first byte and the streaming token rate are settings
(``ORGWARDEN_SIMULATOR_LATENCY_MS``, ``ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND``; 0 means as fast as
possible).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from orgwarden.domain.catalog import Catalog, Model
from orgwarden.domain.tokens import estimate, estimate_request
from orgwarden.gateway.simulator_batches import SimulatedBatches, is_batches_path
from orgwarden.gateway.simulator_files import SimulatorFiles

DEFAULT_OUTPUT_TOKENS = 16
_WORDS = ("Hello", " from", " the", " orgwarden", " simulator", ".")


def _error(status: int, kind: str, message: str) -> tuple[int, bytes]:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}
    return status, json.dumps(body).encode()


_FAULTS = {
    "429": _error(429, "rate_limit_error", "simulated rate limit"),
    "500": _error(500, "api_error", "simulated internal error"),
    "529": _error(529, "overloaded_error", "simulated overload"),
}


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


class Simulator:
    """The simulator as an ASGI app (served in process, or on its own port by ``orgwarden simulator``)."""

    def __init__(
        self, catalog: Catalog, *, latency_ms: float = 0, tokens_per_second: float = 0, batch_seconds: float = 2
    ) -> None:
        self.catalog = catalog
        self.latency = latency_ms / 1000
        self.token_delay = 1 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.files = SimulatorFiles()
        self.batches = SimulatedBatches(self.answer_message, seconds=batch_seconds)  # simulator_batches.py

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
        fault = headers.get("anthropic-simulator-fault", "")
        if fault == "timeout":
            await asyncio.sleep(3600)
        if fault in _FAULTS:
            await self._send(send, *_FAULTS[fault])
            return
        method, path = scope["method"], scope["path"]
        if self.latency:
            await asyncio.sleep(self.latency)
        if is_batches_path(path):
            await self.batches.serve(send, method, path, scope.get("query_string", b""), headers, body)
            return
        if method == "GET" and path == "/v1/models":
            await self._send(send, 200, json.dumps(self._models()).encode())
        elif method == "GET" and path.startswith("/v1/models/"):
            model = self.catalog.find(path.removeprefix("/v1/models/"))
            if model is None:
                await self._send(send, *_error(404, "not_found_error", f"model: {path.rsplit('/', 1)[-1]}"))
            else:
                await self._send(send, 200, json.dumps(self._model(model)).encode())
        elif method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            await self._messages(send, path, body, headers, fault)
        else:
            await self._send(send, *_error(404, "not_found_error", f"no such endpoint: {method} {path}"))

    async def _messages(self, send: Send, path: str, raw: bytes, headers: dict[str, str], fault: str) -> None:
        try:
            request = json.loads(raw)
        except ValueError:
            await self._send(send, *_error(400, "invalid_request_error", "request body is not valid JSON"))
            return
        except RecursionError:
            await self._send(send, *_error(400, "invalid_request_error", "request body is nested too deeply"))
            return
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            await self._send(send, *_error(400, "invalid_request_error", "model: field required"))
            return
        model = self.catalog.find(request["model"])
        if model is None:
            await self._send(send, *_error(404, "not_found_error", f"model: {request['model']}"))
            return
        total_input = estimate_request(request)
        if path.endswith("count_tokens"):
            await self._send(send, 200, json.dumps({"input_tokens": total_input}).encode())
            return
        max_tokens = request.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            await self._send(send, *_error(400, "invalid_request_error", "max_tokens: must be a positive integer"))
            return
        wanted = int(headers.get("anthropic-simulator-output-tokens", DEFAULT_OUTPUT_TOKENS))
        output = max(1, min(wanted, max_tokens))
        usage = self._usage(request, total_input, output, headers.get("anthropic-simulator-cache") == "read")
        message_id = "msg_01" + secrets.token_hex(11)
        words = [_WORDS[i % len(_WORDS)] for i in range(output)]
        stop = "max_tokens" if wanted > max_tokens else "end_turn"
        if request.get("stream") is True:
            await self._stream(send, message_id, model.id, words, usage, stop, cut=fault == "cut")
            return
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model.id,
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        body = json.dumps(message).encode()
        await self._send(send, 200, body[: len(body) // 2] if fault == "cut" else body)

    def answer_message(self, request: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """A non-streaming Messages answer to ``request``: (status, Message or error envelope)."""
        model = self.catalog.find(request["model"]) if isinstance(request.get("model"), str) else None
        if model is None:
            missing = {"type": "not_found_error", "message": f"model: {request.get('model')}"}
            return 404, {"type": "error", "error": missing}
        max_tokens = request.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            message = "max_tokens: must be a positive integer"
            return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        wanted = int(headers.get("anthropic-simulator-output-tokens", DEFAULT_OUTPUT_TOKENS))
        output = max(1, min(wanted, max_tokens))
        cache_read = headers.get("anthropic-simulator-cache") == "read"
        usage = self._usage(request, estimate_request(request), output, cache_read)
        words = [_WORDS[i % len(_WORDS)] for i in range(output)]
        return 200, {
            "id": "msg_01" + secrets.token_hex(11),
            "type": "message",
            "role": "assistant",
            "model": model.id,
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": "max_tokens" if wanted > max_tokens else "end_turn",
            "stop_sequence": None,
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
        self, send: Send, message_id: str, model: str, words: list[str], usage: dict[str, Any], stop: str, *, cut: bool
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
        await event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})  # fmt: skip
        await event("ping", {"type": "ping"})
        for index, word in enumerate(words):
            if cut and index == len(words) // 2:
                raise ConnectionResetError("simulated upstream cut")
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": word}})  # fmt: skip
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                                             "output_tokens", "server_tool_use")}  # fmt: skip
        await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": delta_usage})  # fmt: skip
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

    @staticmethod
    async def _send(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
