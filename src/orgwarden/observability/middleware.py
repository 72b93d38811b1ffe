"""Request metrics for the ASGI apps (the Admin API and the telemetry receiver): a pure-ASGI wrapper.

The route label is the matched route's *template* (``/v1/organizations/workspaces/{workspace_id}``,
from ``scope["route"]``, which Starlette's router sets), never the raw path, so label values stay
bounded; a request no route matched is counted as ``unmatched``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orgwarden.observability.metrics import Metrics, Plane


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request ``app`` answers; an exception counts as a 500."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, plane: Plane, route: Callable[[Scope], str] = route_template
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.plane: Plane = plane
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(self.plane, self.route(scope), scope["method"], status, seconds)
