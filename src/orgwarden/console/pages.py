"""Registering console pages: each declares its permission, like ``api.routing.AdminRouter``.

``ConsolePages.page`` (GET) and ``ConsolePages.action`` (POST) wrap a handler in one guard:

1. the tenant restriction, as on sign-in (``api/routes/auth.py``): a malformed header is a 400 page,
   an organization it does not list a 403 page;
2. the browser session (``ow_session`` cookie, ``SignInService.session``): none → 303 to
   ``/auth/login?next=<this page>`` for a GET, a 401 page for a POST;
3. ``domain.policy.may_use(actor, permission)``: refused → 403 page naming the permission, audited as
   ``authorization.check`` (``api/refusals.py``), as the Admin API does;
4. for an action: the form (urlencoded, bounded) and its ``csrf_token``, compared in constant time with
   the session's → 403 page ``csrf`` (audited) otherwise.

Workspace-scoped checks stay the services' job: handlers call the very service methods the Admin API
routes call, with ``who.context``. Any ``OrgwardenError`` becomes the error page with its status and
message; the database down is a 503 page; anything else a 500 page (logged, no traceback shown).
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import sqlalchemy.exc
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from orgwarden.api.errors import request_id_of
from orgwarden.api.refusals import audit_denied
from orgwarden.api.routes.auth import live_session
from orgwarden.api.routing import attempt, source_ip, tenant_guard
from orgwarden.console import render
from orgwarden.domain.policy import Actor, Permission, may_use
from orgwarden.errors import InvalidRequest, OrgwardenError, PermissionDenied, RequestTooLarge
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.restriction import Caller
from orgwarden.services.context import Context
from orgwarden.services.signin import SessionView
from orgwarden.storage.failures import STORAGE_UNAVAILABLE, is_unavailable

log = logging.getLogger("orgwarden.console")

MAX_FORM_BYTES: Final = 64 * 1024
MAX_FORM_FIELDS: Final = 200
MAX_FIELD_CHARS: Final = 10_000
MAX_NAME_CHARS: Final = 100

Form = dict[str, str]
Handler = Callable[..., Awaitable[Response]]

CONSOLE_ROUTES: dict[tuple[str, str], Permission] = {}
"""Every console route, (method, path) -> its permission: the permission test walks these."""

_TITLES: Final = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the browser session, the services' ``Context`` for it, and its CSRF token."""

    session: SessionView
    context: Context
    csrf_token: str

    @property
    def actor(self) -> Actor:
        return self.context.actor

    @property
    def role(self) -> str:
        return self.session.org_role


def _title(status: int) -> str:
    return _TITLES.get(status, "Service unavailable" if status == 503 else "Something went wrong")


async def read_form(request: Request) -> Form:
    """The POST body as a form: urlencoded only, ≤ 64 KiB, ≤ 200 fields, values ≤ 10,000 characters,
    each field once (a field twice is ambiguous: 400)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise RequestTooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise RequestTooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
    if body and content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the form must be sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise InvalidRequest("the form is not valid UTF-8") from None
    except ValueError:
        raise InvalidRequest(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    form: Form = {}
    for name, value in pairs:
        if len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"a field name is longer than {MAX_NAME_CHARS} characters")
        if name in form:
            raise InvalidRequest(f"field {name!r} is given more than once")
        if len(value) > MAX_FIELD_CHARS:
            raise InvalidRequest(f"field {name!r} is longer than {MAX_FIELD_CHARS} characters")
        if "\x00" in value:
            raise InvalidRequest(f"field {name!r} must not contain NUL characters")
        form[name] = value
    return form


async def _viewer(request: Request) -> Viewer | None:
    """The signed-in viewer, or ``None``; the tenant restriction applies (``Refusal``)."""
    tenant = tenant_guard(request)
    tried = attempt(request, "session")
    allowed = await tenant.allowed_org_ids(request.headers.raw, tried)
    view = await live_session(request)  # an altered or dead cookie is an audited refusal there
    if view is None:
        return None
    await tenant.enforce(allowed, tried, Caller(view.organization_id, "user", view.session_id, view.user_id))
    actor = Actor("user", view.session_id, view.organization_id, view.user_id, view.org_role)
    context = Context(actor, request_id_of(request), source_ip(request))
    request.state.context = context  # for api.refusals.audit_denied
    return Viewer(view, context, view.csrf_token)


def _sign_in_redirect(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"/auth/login?next={quote(here[:500], safe='')}"
    return render.secure(RedirectResponse(target, status_code=303))


async def _guarded(request: Request, who_box: list[Viewer | None], permission: Permission, is_action: bool) -> Any:
    """Steps 1-4 of the module docstring; returns the handler's extra arguments or a Response."""
    who = await _viewer(request)
    who_box[0] = who
    if who is None:
        if request.method == "GET":
            return _sign_in_redirect(request)
        return render.error_page(request, None, 401, _title(401), "not signed in: sign in again and retry")
    if not may_use(who.actor, permission):
        message = f"your organization role ({who.role}) does not have the {permission.value} permission"
        await audit_denied(request, message)
        return render.error_page(request, who, 403, _title(403), message)
    if not is_action:
        return ()
    form = await read_form(request)
    presented = form.pop("csrf_token", "")
    if not presented or not hmac.compare_digest(presented.encode()[:128], who.csrf_token.encode()):
        message = "the form's CSRF token is missing or wrong: reload the page and try again"
        await audit_denied(request, f"csrf: {message}")
        return render.error_page(request, who, 403, _title(403), message)
    return (form,)


def _wrap(handler: Handler, permission: Permission, is_action: bool) -> Callable[[Request], Awaitable[Response]]:
    wanted = set(inspect.signature(handler).parameters)

    async def endpoint(request: Request) -> Response:
        who_box: list[Viewer | None] = [None]
        try:
            extra = await _guarded(request, who_box, permission, is_action)
            if isinstance(extra, Response):
                return extra
            who = who_box[0]
            kwargs = {name: value for name, value in request.path_params.items() if name in wanted}
            for name, value in kwargs.items():
                if "\x00" in value or len(value) > 200:
                    raise InvalidRequest(f"{name}: not a valid identifier")
            response = await handler(request, who, *extra, **kwargs)
        except Refusal as exc:  # the tenant restriction
            response = render.error_page(request, who_box[0], exc.status, _title(exc.status), exc.message)
        except OrgwardenError as exc:
            if isinstance(exc, PermissionDenied):
                await audit_denied(request, exc.message)
            response = render.error_page(request, who_box[0], exc.status, _title(exc.status), exc.message)
        except (sqlalchemy.exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            if not is_unavailable(exc):
                log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
                return render.error_page(request, who_box[0], 500, _title(500), "an internal error occurred; logged")
            log.warning("storage unavailable in %s %s", request.method, request.url.path)
            response = render.error_page(request, who_box[0], 503, _title(503), STORAGE_UNAVAILABLE)
            response.headers["retry-after"] = "5"
        except Exception as exc:  # a bug: logged once, never shown
            log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
            response = render.error_page(request, who_box[0], 500, _title(500), "an internal error occurred; logged")
        return render.secure(response)

    endpoint.__name__ = getattr(handler, "__name__", "console_page")
    endpoint.__doc__ = handler.__doc__
    return endpoint


class ConsolePages:
    """One per page module (``routes = ConsolePages()``); the module exposes ``routes.router``."""

    def __init__(self) -> None:
        self.router = APIRouter(include_in_schema=False)

    def _register(
        self, method: str, path: str, permission: Permission, is_action: bool, nav: str | None
    ) -> Callable[[Handler], Handler]:
        if not isinstance(permission, Permission):
            raise TypeError(f"{method} {path}: every console route must declare a Permission")
        if not path.startswith("/console"):
            raise ValueError(f"{method} {path}: console routes live under /console")

        def register(handler: Handler) -> Handler:
            CONSOLE_ROUTES[(method, path)] = permission
            if nav is not None:
                render.NAV.append(render.NavItem(nav, path, permission, handler.__module__))
            self.router.add_api_route(path, _wrap(handler, permission, is_action), methods=[method])
            return handler

        return register

    def page(
        self, method: str, path: str, *, permission: Permission, nav: str | None = None
    ) -> Callable[[Handler], Handler]:
        """A page (GET): ``handler(request, who, **path_params) -> Response``; ``nav`` lists it in the menu."""
        if method != "GET":
            raise ValueError(f"{method} {path}: a page is a GET; use action() for POST")
        return self._register(method, path, permission, False, nav)

    def action(self, method: str, path: str, *, permission: Permission) -> Callable[[Handler], Handler]:
        """A form post (POST): ``handler(request, who, form, **path_params) -> Response`` after the CSRF check."""
        if method != "POST":
            raise ValueError(f"{method} {path}: an action is a POST")
        return self._register(method, path, permission, True, None)
