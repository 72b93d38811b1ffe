"""A small ASGI app for the server's tests: one path per kind of answer, and a few that show what
the server did (its scope, how much of a body it had taken in)."""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Scope, Send

from orgwarden.gateway.exchange import Exchange
from orgwarden.server.state import DirectHandler


async def _json(send: Send, payload: object, status: int = 200) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/json":
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/chunks":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/close":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"close"), (b"content-length", b"3")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"bye"})
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-injected", b"a\r\nset-cookie: x")]})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
    elif path == "/raise":
        raise RuntimeError("a bug in the app")
    elif path == "/scope":
        client = scope["client"]
        await _json(send, {"path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"),
                           "query": scope["query_string"].decode(), "client": client[0] if client else None,
                           "scheme": scope["scheme"], "method": scope["method"]})  # fmt: skip
    elif path == "/late-reader":
        # Takes its time before reading (as the gateway waiting on a key lookup), then says how much
        # of the body the server had taken in meanwhile: the first message holds all of it.
        await asyncio.sleep(1.5)
        first = await receive()
        total = len(first.get("body", b""))
        more = first.get("more_body", False)
        while more:
            message = await receive()
            total += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _json(send, {"first": len(first.get("body", b"")), "total": total})
    elif path == "/echo":
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await _json(send, {"size": len(body)})
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"].decode() or "1"))
        await _json(send, {"slept": True})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose lifespan start-up fails, as one whose database is unreachable would."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "Traceback (most recent call last):\n  ...\n"
                    "ConnectionRefusedError: the database at db.internal:5432 refused the connection"})  # fmt: skip
        return
    await app(scope, receive, send)


async def _late_direct(exchange: Exchange) -> None:
    """Answers a direct request as the gateway would if its key lookup took a while: reads the body
    only after 2 s, then says how long it was; ``/direct-early`` answers at once, unread (a 401)."""
    if exchange.path == "/direct-early":
        await asyncio.sleep(0.5)  # the unread body piles up meanwhile
        await exchange.respond(401, [(b"content-type", b"application/json")], b'{"early":true}')
        return
    await asyncio.sleep(2)
    body = await exchange.read_body(1 << 30)
    await exchange.respond(200, [(b"content-type", b"application/json")], json.dumps({"size": len(body)}).encode())


late_direct = DirectHandler(_late_direct, lambda method, path: path in ("/direct", "/direct-early"))


async def hanging_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose lifespan shut-down never ends (a database that does not answer)."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(3600)
        return
    await app(scope, receive, send)
