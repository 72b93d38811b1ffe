"""``/scim/v2``: the SCIM 2.0 protocol (RFC 7644) over ``services.scim``, with SCIM's own errors.

Every answer here, refusals included, is SCIM's (``application/scim+json``; errors are
``urn:ietf:params:scim:api:messages:2.0:Error`` with ``status``, ``scimType`` and ``detail``), not the
Anthropic envelope of the Admin API: identity providers parse these. Every request needs a SCIM
token (``Authorization: Bearer ow-scim01-...``). ``route_around`` sends ``/scim/v2`` here before the
Admin API's middleware, so its body limit and error handlers do not apply on this path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy.exc
from scim2_models import (
    Context as ScimContext,
)
from scim2_models import (
    Error,
    ListResponse,
    Meta,
    NotImplementedException,
    ResourceType,
    ResponseParameters,
    Schema,
    SCIMException,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orgwarden.api.routing import credential, source_ip
from orgwarden.api.scim_mount import PREFIX
from orgwarden.errors import OrgwardenError
from orgwarden.identity import scim_models
from orgwarden.identity.scim_models import GroupModel, UserModel
from orgwarden.services.context import Context
from orgwarden.services.scim import ScimService, check_filter
from orgwarden.services.scim_tokens import ScimTokenService
from orgwarden.storage.failures import is_unavailable

log = logging.getLogger("orgwarden.scim")
MEDIA_TYPE = "application/scim+json"


def scim_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type=MEDIA_TYPE if payload is not None else None, headers=headers)


def error_response(status: int, detail: str, scim_type: str | None = None) -> Response:
    error = Error(status=status, scim_type=scim_type, detail=detail)
    return scim_response(error.model_dump(scim_ctx=ScimContext.RESOURCE_QUERY_RESPONSE), status)


def _from_orgwarden(exc: OrgwardenError) -> Response:
    scim_type = "uniqueness" if exc.status == 409 else None  # a 400 here is a rule, not a malformed value
    return error_response(exc.status, exc.message, scim_type)


class _Api:
    """The routes; each authenticates, parses, calls one service method and renders."""

    def __init__(self, tokens: ScimTokenService, scim: ScimService) -> None:
        self.tokens = tokens
        self.scim = scim

    async def context(self, request: Request) -> Context:
        return await self.tokens.authenticate(
            credential(request),
            request_id=request.scope.get("state", {}).get("request_id"),
            source_ip=source_ip(request),
        )

    @staticmethod
    def base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{PREFIX}"

    @staticmethod
    async def body(request: Request) -> Any:
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > scim_models.MAX_BODY_BYTES:
                raise SCIMException.from_error(
                    Error(status=413, detail=f"request body over {scim_models.MAX_BODY_BYTES} bytes")
                )
        try:
            body = json.loads(raw)
        except ValueError:
            raise SCIMException.from_error(
                Error(status=400, scim_type="invalidSyntax", detail="the body is not JSON")
            ) from None
        if _has_nul(body):  # no database stores it the same way; refused, as on the Admin API
            raise SCIMException.from_error(
                Error(status=400, scim_type="invalidValue", detail="values must not contain NUL characters")
            )
        return body

    @staticmethod
    def parameters(query: dict[str, Any]) -> tuple[ResponseParameters[Any], int, int | None, str | None]:
        """``attributes``/``excludedAttributes``, ``startIndex``, ``count``, ``filter`` (RFC 7644 §3.4.2)."""

        def listed(name: str) -> list[str] | None:
            value = query.get(name)
            if value is None:
                return None
            items = value if isinstance(value, list) else str(value).split(",")
            return [str(i).strip() for i in items if str(i).strip()] or None

        def integer(name: str) -> int | None:
            value = query.get(name)
            if value is None or value == "":
                return None
            try:
                return int(value)
            except (TypeError, ValueError):
                raise SCIMException.from_error(
                    Error(status=400, scim_type="invalidValue", detail=f"{name}: not an integer")
                ) from None

        try:
            params: ResponseParameters[Any] = ResponseParameters(
                attributes=listed("attributes"), excluded_attributes=listed("excludedAttributes")
            )
        except ValueError as exc:
            raise SCIMException.from_error(Error(status=400, scim_type="invalidPath", detail=str(exc))) from None
        start = max(integer("startIndex") or 1, 1)
        count = integer("count")
        if count is not None:
            count = min(max(count, 0), scim_models.MAX_RESULTS)
        if _has_nul(query):
            raise SCIMException.from_error(
                Error(status=400, scim_type="invalidValue", detail="parameters must not contain NUL characters")
            )
        filter_text = query.get("filter")
        if filter_text is not None and len(str(filter_text)) > 2048:
            raise SCIMException.from_error(Error(status=400, scim_type="invalidFilter", detail="filter: too long"))
        check_filter(filter_text)
        return params, start, count, filter_text

    @staticmethod
    def one(
        resource: Any, ctx: ScimContext, status: int = 200, params: ResponseParameters[Any] | None = None
    ) -> Response:
        payload = resource.model_dump(scim_ctx=ctx, response_parameters=params)
        headers = {"etag": resource.meta.version} if resource.meta and resource.meta.version else {}
        if status == 201 and resource.meta and resource.meta.location:
            headers["location"] = resource.meta.location
        return scim_response(payload, status, headers)

    @staticmethod
    def many(
        model: Any, resources: list[Any], start: int, count: int | None, params: ResponseParameters[Any]
    ) -> Response:
        total = len(resources)
        size = scim_models.MAX_RESULTS if count is None else count
        page = resources[start - 1 : start - 1 + size]
        listing = ListResponse[model](
            total_results=total, start_index=start, items_per_page=len(page), resources=page or None
        )
        payload = listing.model_dump(scim_ctx=ScimContext.SEARCH_RESPONSE, response_parameters=params)
        if not page:
            payload.setdefault("Resources", [])
        return scim_response(payload)

    # -- discovery

    async def service_provider_config(self, request: Request) -> Response:
        await self.context(request)
        config = scim_models.service_provider_config()
        location = f"{self.base(request)}/ServiceProviderConfig"
        config.meta = Meta(resource_type="ServiceProviderConfig", location=location)
        return scim_response(config.model_dump(scim_ctx=ScimContext.RESOURCE_QUERY_RESPONSE))

    def _described(self, request: Request, kind: str) -> list[Any]:
        items: list[Any] = scim_models.schemas() if kind == "Schema" else scim_models.resource_types()
        for item in items:
            path = "Schemas" if kind == "Schema" else "ResourceTypes"
            item.meta = Meta(resource_type=kind, location=f"{self.base(request)}/{path}/{item.id}")
        return items

    async def schemas(self, request: Request) -> Response:
        await self.context(request)
        return self._listing(Schema, self._described(request, "Schema"))

    async def resource_types(self, request: Request) -> Response:
        await self.context(request)
        return self._listing(ResourceType, self._described(request, "ResourceType"))

    def _listing(self, model: Any, items: list[Any]) -> Response:
        listing = ListResponse[model](
            total_results=len(items), start_index=1, items_per_page=len(items), resources=items
        )
        return scim_response(listing.model_dump(scim_ctx=ScimContext.RESOURCE_QUERY_RESPONSE))

    async def schema(self, request: Request) -> Response:
        await self.context(request)
        return self._described_one(request, "Schema")

    async def resource_type(self, request: Request) -> Response:
        await self.context(request)
        return self._described_one(request, "ResourceType")

    def _described_one(self, request: Request, kind: str) -> Response:
        wanted = request.path_params["id"]
        for item in self._described(request, kind):
            if item.id == wanted:
                return scim_response(item.model_dump(scim_ctx=ScimContext.RESOURCE_QUERY_RESPONSE))
        return error_response(404, f"no {kind} {wanted!r}")

    # -- resources

    async def list_users(self, request: Request) -> Response:
        ctx = await self.context(request)
        params, start, count, filter_text = self.parameters(dict(request.query_params))
        return self.many(
            UserModel, await self.scim.list_users(ctx, self.base(request), filter_text), start, count, params
        )

    async def list_groups(self, request: Request) -> Response:
        ctx = await self.context(request)
        params, start, count, filter_text = self.parameters(dict(request.query_params))
        return self.many(
            GroupModel, await self.scim.list_groups(ctx, self.base(request), filter_text), start, count, params
        )

    async def search(self, request: Request) -> Response:
        ctx = await self.context(request)
        body = await self.body(request)
        if not isinstance(body, dict):
            return error_response(400, "a SearchRequest must be a JSON object", "invalidSyntax")
        params, start, count, filter_text = self.parameters(body)
        base = self.base(request)
        if request.url.path.endswith("/Users/.search"):
            found = await self.scim.list_users(ctx, base, filter_text)
        else:
            found = await self.scim.list_groups(ctx, base, filter_text)
        model = UserModel if request.url.path.endswith("/Users/.search") else GroupModel
        return self.many(model, found, start, count, params)

    async def root_search(self, request: Request) -> Response:
        await self.context(request)
        raise NotImplementedException(detail="searching several resource types at once is not supported")

    async def user(self, request: Request) -> Response:
        ctx = await self.context(request)
        base, user_id = self.base(request), request.path_params["id"]
        if_match = request.headers.get("if-match")
        if request.method == "GET":
            params, *_ = self.parameters(dict(request.query_params))
            resource = await self.scim.get_user(ctx, base, user_id)
            if request.headers.get("if-none-match") == resource.meta.version:
                return Response(status_code=304, headers={"etag": resource.meta.version})
            return self.one(resource, ScimContext.RESOURCE_QUERY_RESPONSE, params=params)
        if request.method == "DELETE":
            await self.scim.delete_user(ctx, user_id, if_match)
            return Response(status_code=204)
        body = await self.body(request)
        if request.method == "PUT":
            resource = await self.scim.replace_user(ctx, base, user_id, body, if_match)
            return self.one(resource, ScimContext.RESOURCE_REPLACEMENT_RESPONSE)
        resource = await self.scim.patch_user(ctx, base, user_id, body, if_match)
        return self.one(resource, ScimContext.RESOURCE_PATCH_RESPONSE)

    async def group(self, request: Request) -> Response:
        ctx = await self.context(request)
        base, group_id = self.base(request), request.path_params["id"]
        if_match = request.headers.get("if-match")
        if request.method == "GET":
            params, *_ = self.parameters(dict(request.query_params))
            resource = await self.scim.get_group(ctx, base, group_id)
            if request.headers.get("if-none-match") == resource.meta.version:
                return Response(status_code=304, headers={"etag": resource.meta.version})
            return self.one(resource, ScimContext.RESOURCE_QUERY_RESPONSE, params=params)
        if request.method == "DELETE":
            await self.scim.delete_group(ctx, group_id, if_match)
            return Response(status_code=204)
        body = await self.body(request)
        if request.method == "PUT":
            resource = await self.scim.replace_group(ctx, base, group_id, body, if_match)
            return self.one(resource, ScimContext.RESOURCE_REPLACEMENT_RESPONSE)
        resource = await self.scim.patch_group(ctx, base, group_id, body, if_match)
        return self.one(resource, ScimContext.RESOURCE_PATCH_RESPONSE)

    async def create_user(self, request: Request) -> Response:
        ctx = await self.context(request)
        resource = await self.scim.create_user(ctx, self.base(request), await self.body(request))
        return self.one(resource, ScimContext.RESOURCE_CREATION_RESPONSE, 201)

    async def create_group(self, request: Request) -> Response:
        ctx = await self.context(request)
        resource = await self.scim.create_group(ctx, self.base(request), await self.body(request))
        return self.one(resource, ScimContext.RESOURCE_CREATION_RESPONSE, 201)


def _has_nul(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) holds a NUL character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def _scim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SCIMException)
    error = exc.to_error()
    return scim_response(error.model_dump(scim_ctx=ScimContext.RESOURCE_QUERY_RESPONSE), error.status or 400)


async def _orgwarden_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrgwardenError)
    response = _from_orgwarden(exc)
    if exc.status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="scim"'
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no such endpoint: {request.method} {request.url.path}")
    if exc.status_code == 405:
        return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
    return error_response(exc.status_code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id")
    if isinstance(exc, sqlalchemy.exc.IntegrityError):  # a race two creations lost to the unique index
        log.warning("conflict in %s %s (%s): %s", request.method, request.url.path, request_id, exc.orig)
        return error_response(409, "the resource conflicts with one created at the same time", "uniqueness")
    if is_unavailable(exc):
        log.warning("storage unavailable in %s %s (%s)", request.method, request.url.path, request_id)
        response = error_response(503, "storage unavailable: the database cannot be reached; retry later")
        response.headers["retry-after"] = "5"
        return response
    log.error("unhandled error in %s %s (%s)", request.method, request.url.path, request_id, exc_info=exc)
    return error_response(500, "an internal error occurred; it has been logged")


def build(tokens: ScimTokenService, scim: ScimService) -> Starlette:
    api = _Api(tokens, scim)
    write = ["GET", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/ServiceProviderConfig", api.service_provider_config, methods=["GET"]),
        Route("/Schemas", api.schemas, methods=["GET"]),
        Route("/Schemas/{id:path}", api.schema, methods=["GET"]),
        Route("/ResourceTypes", api.resource_types, methods=["GET"]),
        Route("/ResourceTypes/{id}", api.resource_type, methods=["GET"]),
        Route("/Users", api.list_users, methods=["GET"]),
        Route("/Users", api.create_user, methods=["POST"]),
        Route("/Users/.search", api.search, methods=["POST"]),
        Route("/Users/{id}", api.user, methods=write),
        Route("/Groups", api.list_groups, methods=["GET"]),
        Route("/Groups", api.create_group, methods=["POST"]),
        Route("/Groups/.search", api.search, methods=["POST"]),
        Route("/Groups/{id}", api.group, methods=write),
        Route("/.search", api.root_search, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        SCIMException: _scim_error,
        OrgwardenError: _orgwarden_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
