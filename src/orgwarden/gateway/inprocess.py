"""The simulator as an upstream in the same process, behind the same interface as ``http1.Pool``.

Each request runs the simulator's ASGI app in a task; the response is handed back as soon as the app
starts it and its body chunks are yielded as they are sent, so time to first byte and SSE relaying
behave as with a real upstream. A read timeout applies to the head and between chunks, and an app
that dies mid-body surfaces as ``Broken``, exactly like a cut connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message

from orgwarden.gateway.exchange import BodyTooLarge, ClientGone
from orgwarden.gateway.http1 import Broken, ConnectFailed, ReadTimedOut, StreamedBody, first_header

_END = object()


class InProcessResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], queue: asyncio.Queue[Any],
                 task: asyncio.Task[None], read_timeout: float) -> None:  # fmt: skip
        self.status = status
        self.headers = headers
        self._queue = queue
        self._task = task
        self._timeout = read_timeout

    def header(self, name: bytes) -> bytes | None:
        return first_header(self.headers, name)

    def arrived(self) -> bytes | None:
        return None  # the simulator's answer comes through its queue: always iterated

    @property
    def done(self) -> bool:
        return False  # the end is a queue item of its own, found by iterating

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    item = await self._queue.get()
            except TimeoutError:
                raise ReadTimedOut("the simulator stopped sending") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise Broken(f"the simulator failed mid-body: {item}") from item
            yield item

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class InProcess:
    def __init__(self, app: ASGIApp, *, read_timeout: float) -> None:
        self.app = app
        self.read_timeout = read_timeout

    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | StreamedBody
    ) -> InProcessResponse:
        raw_path, _, query = target.partition("?")  # the target is still escaped, as on the wire
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": query.encode(),
            "headers": headers, "client": ("127.0.0.1", 0), "server": ("simulator", 80),
        }  # fmt: skip
        queue: asyncio.Queue[Any] = asyncio.Queue()
        started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if isinstance(body, StreamedBody) and not sent_body:  # piece by piece, as the client sends
                piece = await anext(body.chunks, None)
                if piece is not None:
                    return {"type": "http.request", "body": piece, "more_body": True}
                sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect until cancelled
            return {"type": "http.disconnect"}  # pragma: no cover

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    queue.put_nowait(message["body"])
                if not message.get("more_body", False):
                    queue.put_nowait(_END)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():  # an error of the body's source included: request() raises it
                    started.set_exception(exc)
                else:
                    queue.put_nowait(exc)
            else:
                queue.put_nowait(_END)

        task = asyncio.create_task(run())
        try:
            async with asyncio.timeout(self.read_timeout):
                start = await asyncio.shield(started)
        except TimeoutError:
            task.cancel()
            raise ReadTimedOut("the simulator did not answer in time") from None
        except (BodyTooLarge, ClientGone):  # the request body's source failed, not the simulator
            raise
        except Exception as exc:
            raise ConnectFailed(f"the simulator failed: {exc}") from exc
        return InProcessResponse(start["status"], list(start.get("headers", [])), queue, task, self.read_timeout)
