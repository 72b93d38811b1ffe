"""A stand-in for the upstream model API that shows what it received (run on orgwarden's server:
``python -m orgwarden.server tests.gateway.echo_upstream:app --no-lifespan``).

``POST /v1/messages`` answers a Message whose text is a JSON report: the exact body bytes
(base64), the headers as received and the client port of the connection it came on; with
``?close=1`` the answer says ``connection: close``; with ``?drop=1`` the connection is dropped
half-way through the answer; with ``?chunks=N`` the answer goes out as N pieces of chunked
transfer encoding, one right after another. With ``"stream": true`` it sends four SSE events (a
``ping`` among them) 0.3 s apart, so a test can see that the gateway relays each one as it comes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from starlette.types import Receive, Scope, Send

USAGE = {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    report = {
        "body_b64": base64.b64encode(body).decode(),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode(),
        "client_port": scope["client"][1],  # which connection of the gateway's pool it came on
    }
    request: dict[str, Any] = json.loads(body) if body else {}
    if request.get("stream"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"x-upstream-marker", b"yes")]})  # fmt: skip
        start = {"type": "message_start", "message": {"id": "msg_echo", "type": "message", "role": "assistant",
                 "model": request.get("model"), "content": [], "usage": {**USAGE, "output_tokens": 1}}}  # fmt: skip
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
        for name, data in (
            ("message_start", start),
            ("ping", {"type": "ping"}),
            ("message_delta", delta),
            ("message_stop", {"type": "message_stop"}),
        ):
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    message = {"id": "msg_echo", "type": "message", "role": "assistant", "model": request.get("model", "x"),
               "content": [{"type": "text", "text": json.dumps(report)}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": USAGE}  # fmt: skip
    payload = json.dumps(message).encode()
    headers = [(b"content-type", b"application/json"), (b"x-upstream-marker", b"yes"), (b"request-id", b"req_upstream")]
    if b"close=1" in scope["query_string"]:  # an upstream that ends the connection after this answer
        headers.append((b"connection", b"close"))
    if b"drop=1" in scope["query_string"]:  # an upstream that fails half-way through its answer
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True})
        raise ConnectionResetError("the echo upstream drops the connection half-way")
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    pieces = int(dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
                 .get("chunks", "1"))  # fmt: skip
    if pieces > 1:  # no content-length: the server sends each body message as a chunk
        size = -(-len(payload) // pieces)
        for at in range(0, len(payload), size):
            await send({"type": "http.response.body", "body": payload[at : at + size], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.body", "body": payload})
