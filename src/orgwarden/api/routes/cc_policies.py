"""Claude Code policies (the SDK's ``beta.organization.claude_code.managed_settings``): the
configuration (mode and RBAC group order), the default settings and each RBAC group's settings, at
Anthropic's paths and shapes. orgwarden's extension fields (``allowed_models``, ``denied_models`` and,
on a group, ``email_domains``) ride in the same bodies (the SDK's ``extra_body``) and come back in the
answers. The beta header is accepted, never required. Organization admins only.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.params import QueryParams, has_nul
from orgwarden.api.render import cc_configuration as configuration
from orgwarden.api.render import cc_default as default
from orgwarden.api.render import cc_group as group
from orgwarden.api.render import cc_group_summary as summary
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.policy import Permission
from orgwarden.errors import InvalidRequest, RequestTooLarge
from orgwarden.services.cc_policies import MAX_SETTINGS_BYTES, UNSET

routes = AdminRouter()
BASE = "/v1/organizations/claude_code/managed_settings"
MAX_BODY = 2 * MAX_SETTINGS_BYTES
READ = Permission.CLAUDE_CODE_SETTINGS_READ
WRITE = Permission.CLAUDE_CODE_SETTINGS_WRITE


async def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise RequestTooLarge(f"request body is over {MAX_BODY} bytes")
    if not raw.strip():
        raise InvalidRequest("request body is required: send a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    for name in body:
        if name not in allowed:
            raise InvalidRequest(f"{str(name)[:100]}: Extra inputs are not permitted")
    if has_nul(body):
        raise InvalidRequest("request body must not contain NUL (\\u0000) characters")
    return body


@routes.route("GET", f"{BASE}/configuration", permission=READ)
async def get_configuration(request: Request) -> Response:
    return ok(configuration(await services(request).cc_policies.configuration(context(request))))


@routes.route("POST", f"{BASE}/configuration", permission=WRITE)
async def update_configuration(request: Request) -> Response:
    body = await _body(request, frozenset({"mode", "rbac_group_order", "rbac_group_order_version"}))
    mode = body.get("mode")
    if mode is not None and not (isinstance(mode, dict) and isinstance(mode.get("type"), str) and len(mode) == 1):
        raise InvalidRequest('mode: must be an object such as {"type": "rbac_groups"}')
    order = body.get("rbac_group_order")
    if order is not None and (
        not isinstance(order, list) or len(order) > 1000 or not all(isinstance(g, str) and len(g) <= 64 for g in order)
    ):
        raise InvalidRequest("rbac_group_order: must be a list of RBAC group ids")
    version = body.get("rbac_group_order_version")
    if version is not None and (not isinstance(version, str) or len(version) > 64):
        raise InvalidRequest("rbac_group_order_version: must be a string")
    result = await services(request).cc_policies.update_configuration(
        context(request), mode=mode["type"] if mode else None, order=order, order_version=version
    )
    return ok(configuration(result))


@routes.route("GET", f"{BASE}/rbac_group_default", permission=READ)
async def get_default(request: Request) -> Response:
    return ok(default(await services(request).cc_policies.default(context(request))))


@routes.route("POST", f"{BASE}/rbac_group_default", permission=WRITE)
async def set_default(request: Request) -> Response:
    body = await _body(request, frozenset({"settings", "allowed_models", "denied_models"}))
    if "settings" not in body:
        raise InvalidRequest("settings: Field required (a JSON object, or null to clear the default settings)")
    config = await services(request).cc_policies.set_default(
        context(request),
        settings=body["settings"],
        allowed_models=body.get("allowed_models", UNSET),
        denied_models=body.get("denied_models", UNSET),
    )
    return ok(default(config))


@routes.route("GET", f"{BASE}/rbac_groups", permission=READ)
async def list_groups(request: Request) -> Response:
    q = QueryParams(request)
    items, next_page = await services(request).cc_policies.list_groups(
        context(request), limit=q.integer("limit", default=20, low=1, high=100), page=q.string("page")
    )
    return ok({"data": [summary(v) for v in items], "next_page": next_page})


@routes.route("GET", f"{BASE}/rbac_groups/{{rbac_group_id}}", permission=READ)
async def get_group(request: Request, rbac_group_id: str) -> Response:
    return ok(group(await services(request).cc_policies.get(context(request), rbac_group_id)))


@routes.route("POST", f"{BASE}/rbac_groups/{{rbac_group_id}}", permission=WRITE)
async def set_group(request: Request, rbac_group_id: str) -> Response:
    body = await _body(request, frozenset({"settings", "email_domains", "allowed_models", "denied_models"}))
    if "settings" not in body:
        raise InvalidRequest("settings: Field required (a JSON object of Claude Code settings)")
    view = await services(request).cc_policies.set_group(
        context(request),
        rbac_group_id,
        settings=body["settings"],
        email_domains=body.get("email_domains", UNSET),
        allowed_models=body.get("allowed_models", UNSET),
        denied_models=body.get("denied_models", UNSET),
    )
    return ok(group(view))


@routes.route("DELETE", f"{BASE}/rbac_groups/{{rbac_group_id}}", permission=WRITE)
async def delete_group(request: Request, rbac_group_id: str) -> Response:
    gone = await services(request).cc_policies.delete(context(request), rbac_group_id)
    return ok({"rbac_group_id": gone, "type": "claude_code_rbac_group_managed_settings_deleted"})
