"""Drawing console pages: one Jinja2 environment, the security headers, the navigation and notices.

Every console answer (pages, error pages, CSV, static files) carries ``SECURITY_HEADERS``: a strict
Content-Security-Policy (no inline script or style), no framing, no sniffing, no caching. The
navigation lists only the sections whose permission the viewer's role may use (``domain.policy.may_use``),
so a link is never shown for a page that would refuse; the pages still check for themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orgwarden.domain.policy import Actor, Permission, may_use

if TYPE_CHECKING:
    from orgwarden.console.pages import Viewer

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

ENV: Final = Environment(
    loader=PackageLoader("orgwarden.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    path: str
    permission: Permission
    module: str = ""  # the page module that registered it (``app.PAGE_MODULES`` orders the menu)


NAV: list[NavItem] = []
"""Every console section in registration order (``PAGE_MODULES``' order); ``pages.page(nav=...)`` adds to it."""

NOTICES: dict[str, str] = {}
"""Notice code (``?notice=<code>`` after a POST-redirect-GET) -> the sentence shown."""


def notices(codes: Mapping[str, str]) -> None:
    """Register a page module's notice codes (each module keeps its own dict)."""
    NOTICES.update(codes)


def nav_for(actor: Actor | None) -> list[NavItem]:
    """The sections ``actor`` may open (none without a session)."""
    if actor is None:
        return []
    return [item for item in NAV if may_use(actor, item.permission)]


def secure(response: Response) -> Response:
    """Add the console's security headers to ``response``."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def render(request: Request, who: Viewer | None, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """``template`` rendered with the common context (``who``, ``nav``, ``csrf_token``, ``notice``, ``path``)."""
    notice_code = request.query_params.get("notice", "")
    text = ENV.get_template(template).render(
        who=who,
        nav=nav_for(who.context.actor if who is not None else None),
        csrf_token=who.csrf_token if who is not None else "",
        notice=NOTICES.get(notice_code[:64]),
        path=request.url.path,
        **ctx,
    )
    response = HTMLResponse(text, status_code=status)
    secure(response)
    return response


def error_page(request: Request, who: Viewer | None, status: int, title: str, message: str) -> HTMLResponse:
    """The error page: same layout, the status and a message naming the problem; never a traceback."""
    return render(request, who, "error.html", status=status, title=title, message=message, status_code=status)
