"""The overview (``/console``): this month's spend against the viewer's limits, spend and tokens per
day, the top workspaces, keys, users and models, limits near their cap and the audit chain's status."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from orgwarden.console.pages import ConsolePages, Viewer
from orgwarden.console.render import render
from orgwarden.domain.policy import Permission

routes = ConsolePages()


@routes.page("GET", "/console", permission=Permission.ORGANIZATION_READ, nav="Overview")
async def overview(request: Request, who: Viewer) -> Response:
    """Every member may open the overview; what it shows depends on their permissions."""
    return render(request, who, "overview.html", title="Overview")
