"""The console's router: every page module, its static files, and a 404 page for the rest of /console.

Page modules are listed once, in ``PAGE_MODULES``; their order is the navigation's order.
``api/app.py`` mounts ``router``.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from orgwarden.console import (
    audit,
    claude_code,
    groups,
    keys,
    limits,
    overview,
    people,
    render,
    reports,
    tunnels,
    workspace_members,
    workspaces,
)

PAGE_MODULES: Final = [
    overview,
    workspaces,  # /console/workspaces*
    workspace_members,  # /console/workspaces/{id}/members*
    keys,  # /console/keys*
    people,  # /console/users*, /console/invites*
    groups,  # /console/groups*
    reports,  # /console/usage*, /console/cost*
    claude_code,  # /console/claude-code
    limits,  # /console/limits*, a workspace's limit forms
    audit,  # /console/audit*
    tunnels,  # /console/tunnels*
]

_STATIC_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,60}\.(css|js|svg|png)")
_TYPES: Final = {
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}

router = APIRouter(include_in_schema=False)
for _module in PAGE_MODULES:
    router.include_router(_module.routes.router)
_ORDER: Final = {module.__name__: i for i, module in enumerate(PAGE_MODULES)}
render.NAV.sort(key=lambda item: _ORDER.get(item.module, len(_ORDER)))  # stable: a module's own order stays


@router.get("/console/static/{name}")
async def static(request: Request, name: str) -> Response:
    """A file of the package's ``console/static`` directory (names checked: no paths)."""
    match = _STATIC_NAME.fullmatch(name)
    file = resources.files("orgwarden.console").joinpath("static", name) if match else None
    if match is None or file is None or not file.is_file():
        return render.error_page(request, None, 404, "Not found", f"no such console file: {name[:80]}")
    return render.secure(Response(file.read_bytes(), media_type=_TYPES[match.group(1)]))


@router.get("/console/{rest:path}")
async def not_found(request: Request, rest: str) -> Response:
    """Any other console address: the console's own 404 page (no data shown, so no session needed)."""
    return render.error_page(request, None, 404, "Not found", f"there is no console page at /console/{rest[:200]}")
