"""An httpx2 transport that serves requests from an ASGI app in the same process, streaming.

httpx2's own ``ASGITransport`` collects the whole response before returning it, which would hide the
very thing the gateway must get right: time to first byte and chunk-by-chunk SSE relaying. This one
hands back the response as soon as the app starts it, then yields each body chunk as it is sent.
It also honours httpx2's read timeout (``ReadTimeout``) and turns an app that dies mid-body into
``RemoteProtocolError``, exactly what a real connection would give the upstream client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.types import ASGIApp, Message

_END = object()


class _Body(httpx2.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue[Any], task: asyncio.Task[None], timeout: float | None) -> None:
        self._queue = queue
        self._task = task
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), self._timeout)
            except TimeoutError:
                raise httpx2.ReadTimeout("in-process upstream did not send in time") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise httpx2.RemoteProtocolError(f"in-process upstream failed mid-body: {item}") from item
            yield item

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class StreamingASGITransport(httpx2.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": (request.url.host, request.url.port or 80),
        }
        sent_request = False
        queue: asyncio.Queue[Any] = asyncio.Queue()
        started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect until cancelled
            return {"type": "http.disconnect"}  # pragma: no cover

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    await queue.put(chunk)
                if not message.get("more_body", False):
                    await queue.put(_END)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
                else:
                    await queue.put(exc)
            else:
                await queue.put(_END)

        task = asyncio.create_task(run())
        try:
            start = await asyncio.wait_for(asyncio.shield(started), read_timeout)
        except TimeoutError:
            task.cancel()
            raise httpx2.ReadTimeout("in-process upstream did not answer in time", request=request) from None
        except Exception as exc:
            raise httpx2.ConnectError(f"in-process upstream failed: {exc}", request=request) from exc
        return httpx2.Response(
            start["status"], headers=start.get("headers", []), stream=_Body(queue, task, read_timeout), request=request
        )
