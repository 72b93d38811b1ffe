"""``/scim/v2`` in front of the Admin API, with the SCIM app built on its first request.

The SCIM app needs ``scim2_models`` (and the service and models built on it), about 0.4 s to import:
a third of what ``orgwarden serve`` spends importing before it answers, for an endpoint most
installations call a few times a day, or never. So ``orgwarden.api.app`` imports only this module;
the first ``/scim/v2`` request imports and builds the SCIM app in a worker thread (the event loop
keeps serving meanwhile; requests that arrive during it wait for the same build) and every later one
goes straight to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/scim/v2"


class ScimMount:
    """Send ``/scim/v2`` and below to the SCIM app (``build()`` makes it, once), the rest to ``rest``."""

    def __init__(self, build: Callable[[], ASGIApp], rest: ASGIApp) -> None:
        self._build = build
        self._scim: ASGIApp | None = None
        self._building: asyncio.Future[ASGIApp] | None = None
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            scim = self._scim or await self._built()
            await scim({**scope, "root_path": PREFIX}, receive, send)
        else:
            await self.rest(scope, receive, send)

    async def _built(self) -> ASGIApp:
        building = self._building
        if building is None:
            building = self._building = asyncio.get_running_loop().run_in_executor(None, self._build)
        try:
            self._scim = await asyncio.shield(building)
        except BaseException:
            if building.done() and self._building is building:  # failed: the next request tries again
                self._building = None
            raise
        return self._scim
