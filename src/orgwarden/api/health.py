"""Is each dependency answering? What ``/health`` and ``/ready`` report, and what metrics can read.

The database is asked ``SELECT 1``, Redis (when configured) ``PING``, each within ``CHECK_TIMEOUT``
seconds. A result is reused for ``CACHE_SECONDS``, and callers arriving while a check runs share it,
so a load balancer or a monitor polling as often as it likes costs the database at most one query
a second per worker. ``database_up`` / ``redis_up`` hold the last result (``redis_up`` is None
without Redis) for whoever wants it without a check (the metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orgwarden.storage.failures import describe

log = logging.getLogger("orgwarden.api")

CHECK_TIMEOUT = 2.0
CACHE_SECONDS = 1.0


class Health:
    def __init__(self, engine: AsyncEngine, redis_url: str | None, timeout: float = CHECK_TIMEOUT) -> None:
        self._engine = engine
        self._redis_url = redis_url
        self._timeout = timeout
        self.database_up = True
        self.redis_up: bool | None = None if redis_url is None else True
        self._checked = -CACHE_SECONDS
        self._running: asyncio.Task[None] | None = None
        self._redis: object | None = None  # the PING connection (gateway.resp.Client), made on first use

    def down(self) -> list[str]:
        """The dependencies that did not answer at the last check, by name."""
        failing = [] if self.database_up else ["database"]
        if self.redis_up is False:
            failing.append("redis")
        return failing

    async def check(self) -> list[str]:
        """Check (or reuse a check at most ``CACHE_SECONDS`` old); the failing dependencies."""
        if time.monotonic() - self._checked >= CACHE_SECONDS:
            if self._running is None:
                self._running = asyncio.create_task(self._check_all())
            running = self._running
            try:
                await asyncio.shield(running)
            finally:
                if running.done() and self._running is running:
                    self._running = None
        return self.down()

    async def _check_all(self) -> None:
        checks = [self._database()]
        if self._redis_url is not None:
            checks.append(self._ping())
        await asyncio.gather(*checks)
        self._checked = time.monotonic()

    async def _database(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            up = True
        except Exception as exc:  # anything at all: the database did not answer
            if self.database_up:
                log.warning("health: the database does not answer (%s)", describe(exc))
            up = False
        self.database_up = up

    async def _ping(self) -> None:
        from orgwarden.gateway.resp import Client

        if self._redis is None:
            assert self._redis_url is not None
            self._redis = Client(self._redis_url, timeout=self._timeout, name="orgwarden-health")
        client = self._redis
        assert isinstance(client, Client)
        try:
            async with asyncio.timeout(self._timeout):
                await client.call("PING")
            up = True
        except Exception as exc:  # refused, timed out, an error reply
            if self.redis_up:
                log.warning("health: Redis does not answer (%s)", type(exc).__name__)
            up = False
        self.redis_up = up

    async def aclose(self) -> None:
        from orgwarden.gateway.resp import Client

        if self._running is not None:
            self._running.cancel()
        if isinstance(self._redis, Client):
            await self._redis.aclose()
