"""Admin routes declare their permission; registering one without it is an error.

``AdminRouter.route`` is the only way Admin API endpoints are registered. It adds a guard that
applies the tenant restriction (``gateway.restriction``: 400 for malformed headers, 403 for an
organization they do not list, as on the data plane), authenticates the admin key (``x-api-key`` or
``Authorization: Bearer``), asks the policy whether the actor holds the permission, and leaves a
``Context`` on the request for the handler (``context()``).

The credential is an admin key, or a signed-in user's access token (``ow-at01-...``, from
``orgwarden login`` or the OAuth endpoints), resolved through ``api.user_auth.UserTokenCache``. The
guard refuses with 403 a route that is open to the actor in no workspace (``domain.policy.may_use``);
workspace-scoped checks happen in the service layer (``services.access``), where the workspace is known.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from orgwarden.api.user_auth import UserTokenCache, is_user_token
from orgwarden.domain.policy import Actor, Permission, may_use
from orgwarden.errors import AuthenticationFailed, InvalidRequest, OrgwardenError, PermissionDenied
from orgwarden.gateway.restriction import Attempt, Caller, TenantGuard
from orgwarden.services.container import Services
from orgwarden.services.context import Context

Handler = Callable[..., Awaitable[Response]]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def user_tokens(request: Request) -> UserTokenCache:
    cache: UserTokenCache = request.app.state.user_tokens
    return cache


def credential(request: Request) -> str | None:
    """The presented key or user access token: ``x-api-key``, else ``Authorization: Bearer``. Never logged."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def source_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def context(request: Request) -> Context:
    ctx: Context = request.state.context
    return ctx


def tenant_guard(request: Request) -> TenantGuard:
    guard: TenantGuard = request.app.state.tenant_guard
    return guard


def attempt(request: Request, auth_kind: str) -> Attempt:
    """This request as the tenant restriction's audit event records it."""
    return Attempt(request.state.request_id, request.method, request.url.path, source_ip(request), auth_kind)


def caller(actor: Actor) -> Caller:
    return Caller(actor.organization_id, actor.kind, actor.id, actor.user_id)


async def authenticate(request: Request, secret: str) -> Actor:
    """The actor behind an Admin API credential: an admin key, or a user's access token; 401/403 otherwise."""
    if is_user_token(secret):
        actor = await user_tokens(request).actor(secret)
        if actor is None:
            raise AuthenticationFailed(
                "invalid access token: it is unknown, expired or revoked, or its user is no longer active"
                " (sign in again with orgwarden login)"
            )
        return actor
    return await services(request).admin_keys.authenticate(secret)


async def _sender(request: Request, secret: str | None) -> Caller | None:
    """Who a credential belongs to, for the audit event of a malformed header (which is a 400 anyway)."""
    if secret is None:
        return None
    try:
        return caller(await authenticate(request, secret))
    except (OrgwardenError, SQLAlchemyError, OSError):  # unknown, or not known now: the 400 stands
        return None


def _auth_kind(secret: str | None) -> str:
    if secret is None:
        return "none"
    return "user_token" if is_user_token(secret) else "admin_api_key"


def _guard(permission: Permission) -> Callable[[Request], Awaitable[None]]:
    async def guard(request: Request) -> None:
        secret = credential(request)
        # The tenant restriction, as on the data plane: its syntax before the key (400 whoever sends
        # it), the organization after it (403).
        tenant = tenant_guard(request)
        tried = attempt(request, _auth_kind(secret))
        allowed = await tenant.allowed_org_ids(request.headers.raw, tried, lambda: _sender(request, secret))
        if secret is None:
            raise AuthenticationFailed(
                "missing credentials: send your admin API key (or your access token) in the x-api-key header"
                " or as Authorization: Bearer"
            )
        actor = await authenticate(request, secret)
        await tenant.enforce(allowed, tried, caller(actor))
        request.state.context = Context(actor, request.state.request_id, source_ip(request))
        if not may_use(actor, permission):
            if actor.kind == "user":
                raise PermissionDenied(
                    f"your organization role ({actor.org_role}) does not have the {permission.value} permission"
                )
            raise PermissionDenied(f"this credential does not have the {permission.value} permission")
        for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
            if "\x00" in value:
                raise InvalidRequest(f"{name}: must not contain NUL characters")

    return guard


REGISTERED: dict[tuple[str, str], Permission] = {}
"""Every Admin API route, (method, path) -> its permission: the table-driven role test walks these."""


class AdminRouter:
    def __init__(self) -> None:
        self.router = APIRouter()

    def route(
        self, method: str, path: str, *, permission: Permission, status_code: int = 200
    ) -> Callable[[Handler], Handler]:
        if not isinstance(permission, Permission):
            raise TypeError(f"{method} {path}: every Admin API route must declare a Permission")

        def register(handler: Handler) -> Handler:
            REGISTERED[(method, path)] = permission
            self.router.add_api_route(
                path,
                handler,
                methods=[method],
                status_code=status_code,
                dependencies=[Depends(_guard(permission))],
                response_class=JSONResponse,
            )
            return handler

        return register


def ok(payload: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status_code)


class FastJSONResponse(JSONResponse):
    """``JSONResponse``'s exact bytes, encoded by orjson: for the large answers of the reports.

    Starlette encodes with ``json.dumps(ensure_ascii=False, allow_nan=False, separators=(",", ":"))``;
    orjson writes the same bytes for what a report holds (dicts with string keys in insertion order,
    strings, integers, booleans, null) about ten times faster (a 31-day cost report by workspace and
    description at 10 million records: 20 MB in ~30 ms instead of ~350 ms). Floats would differ
    (``1e16`` against ``1e+16``), so only payloads without them come here. What orjson refuses (an
    integer beyond 64 bits, a lone surrogate) is encoded by the standard library, as before.
    """

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return super().render(content)


def ok_fast(payload: Any, status_code: int = 200) -> JSONResponse:
    """``ok`` for large payloads of strings, integers, booleans and null (``FastJSONResponse``)."""
    return FastJSONResponse(payload, status_code=status_code)
