"""Pure-ASGI middleware (no per-request task or body copy): request ids and the body-size cap."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orgwarden import ids
from orgwarden.api.errors import envelope
from orgwarden.errors import RequestTooLarge
from orgwarden.storage.failures import STORAGE_UNAVAILABLE, describe, is_unavailable

log = logging.getLogger("orgwarden.api")


class RequestIdMiddleware:
    """Gives every request a ``req_...`` id (``scope["state"]["request_id"]``) and echoes it in the
    ``request-id`` response header, errors included.

    It is also the last line of defence: an exception no handler knew (a bug) is logged once, with the
    request id, and answered with a 500 ``api_error`` envelope that reveals nothing of it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if is_unavailable(exc):  # the database is down or frozen: no bug, an honest 503
                log.warning("storage unavailable in %s %s (%s): %s", scope["method"], scope["path"], request_id,
                            describe(exc))  # fmt: skip
                if not started:
                    body = envelope("api_error", STORAGE_UNAVAILABLE, request_id)
                    await _send_json(send_with_id, 503, body, [(b"retry-after", b"5")])
                return
            log.error("unhandled error in %s %s (%s)", scope["method"], scope["path"], request_id, exc_info=exc)
            if not started:
                body = envelope("api_error", "an internal error occurred; it has been logged", request_id)
                await _send_json(send_with_id, 500, body)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413 ``request_too_large``: at once when
    Content-Length says so, or as soon as a chunked body goes past the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit or declared < 0:
                    await self._refuse(scope, send, declared)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge(f"request body is larger than the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, send: Send, declared: int) -> None:
        if declared < 0:
            status, kind, text = 400, "invalid_request_error", "the Content-Length header is not a valid number"
        else:
            status, kind = 413, "request_too_large"
            text = f"request body of {declared} bytes is larger than the limit of {self.limit} bytes"
        state: dict[str, Any] = scope.get("state", {})
        await _send_json(send, status, envelope(kind, text, str(state.get("request_id", ""))))


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
