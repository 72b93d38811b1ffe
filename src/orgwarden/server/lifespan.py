"""The ASGI lifespan protocol: the app's start-up before the first connection, its shut-down last."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message

log = logging.getLogger("orgwarden.server")


class LifespanFailed(Exception):
    """The app's start-up or shut-down failed; the message is one line."""


class Lifespan:
    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.startup_done: asyncio.Future[str | None] | None = None
        self.shutdown_done: asyncio.Future[str | None] | None = None
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.startup_done = loop.create_future()
        self.shutdown_done = loop.create_future()
        self.task = loop.create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        failure = await self.startup_done
        if failure is not None:
            raise LifespanFailed(failure)
        log.info("Application startup complete.")

    async def shutdown(self) -> None:
        if self.task is None or self.shutdown_done is None:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        failure = await self.shutdown_done
        await asyncio.wait({self.task})
        if failure is not None:
            raise LifespanFailed(failure)
        log.info("Application shutdown complete.")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            line = _one_line(f"{type(exc).__name__}: {exc}")
            for future in (self.startup_done, self.shutdown_done):
                if future is not None and not future.done():
                    future.set_result(line)
            if not isinstance(exc, Exception):
                raise
        else:
            for future in (self.startup_done, self.shutdown_done):
                if future is not None and not future.done():
                    future.set_result(None)  # an app without a lifespan: nothing to wait for

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed") and self.startup_done is not None:
            failed = kind.endswith("failed")
            if not self.startup_done.done():
                self.startup_done.set_result(_one_line(message.get("message", "")) if failed else None)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed") and self.shutdown_done is not None:
            failed = kind.endswith("failed")
            if not self.shutdown_done.done():
                self.shutdown_done.set_result(_one_line(message.get("message", "")) if failed else None)


def _one_line(text: str) -> str:
    """The last non-empty line (Starlette sends a whole traceback as the failure's message)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "failed"
