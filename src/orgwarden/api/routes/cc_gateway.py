"""What Claude Code's gateway sign-in needs besides the OAuth endpoints (``routes/auth.py``):
``GET /managed/settings``, the signed-in user's Claude Code managed settings.

Claude Code (verified with 2.1.332), once signed in to a gateway over ``https``, polls
``{base}/managed/settings`` about once an hour with ``Authorization: Bearer <access token>`` and
``If-None-Match: "sha256:<hex>"``, the SHA-256 of the settings it holds as JSON with keys sorted at
every level and no whitespace. The answer is ``{"uuid", "checksum", "settings"}`` (a ``200`` without
that wrapper counts as a failed fetch), the ``ETag`` is the quoted checksum, and a matching
``If-None-Match`` answers ``304`` (only then: an unasked ``304`` is a failed fetch to the client).
Without a live user access token: ``401`` in the Anthropic envelope with ``x-should-retry: false``,
so that the client asks for a new sign-in at once instead of retrying for minutes.

The settings are ``CcPolicyService.effective_for_user``: the user's groups' policy. Database round
trips per poll: the token (read fresh, so that a revocation counts at once), then the policy. This is
not a hot path (one poll per session an hour).
"""

from __future__ import annotations

import hashlib
import uuid

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from orgwarden.api.errors import envelope, request_id_of
from orgwarden.api.routing import services
from orgwarden.api.user_auth import is_user_token
from orgwarden.domain.cc_policy import canonical_json

router = APIRouter(include_in_schema=False)

_NO_RETRY = {"x-should-retry": "false", "www-authenticate": 'Bearer realm="orgwarden"', "cache-control": "no-store"}
_MAX_IF_NONE_MATCH = 1024


def settings_checksum(settings: object) -> str:
    """The value Claude Code computes over the settings it holds: ``sha256:`` + hex SHA-256 of the JSON
    with sorted keys and no whitespace (non-ASCII kept, as ``JSON.stringify`` writes it)."""
    return "sha256:" + hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def _matches(if_none_match: str | None, checksum: str) -> bool:
    """Whether ``If-None-Match`` names our current checksum (quoted or not, weak or strong); ``*`` is
    not a match here: Claude Desktop sends it to ask whether settings exist and reads a 304 as "yes,
    and they must not be missing", so it gets the same answer as without the header."""
    if not if_none_match or len(if_none_match) > _MAX_IF_NONE_MATCH:
        return False
    for candidate in if_none_match.split(","):
        value = candidate.strip().removeprefix("W/").strip('"')
        if value == checksum:
            return True
    return False


def _unauthenticated(request: Request, message: str) -> JSONResponse:
    payload = envelope("authentication_error", message, request_id_of(request))
    return JSONResponse(payload, status_code=401, headers=_NO_RETRY)


@router.get("/managed/settings")
async def managed_settings(request: Request) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthenticated(
            request, "missing credentials: sign in to orgwarden (Claude Code: /login) and send Authorization: Bearer"
        )
    if not is_user_token(token):
        return _unauthenticated(
            request,
            "managed settings are per signed-in user: send a user access token (ow-at01-...), not an API key",
        )
    grant = await services(request).user_tokens.resolve(token)  # fresh: a revocation counts at once
    if grant is None:
        return _unauthenticated(
            request,
            "invalid access token: it is unknown, expired or revoked, or its user is no longer active; sign in again",
        )
    policy = await services(request).cc_policies.effective_for_user(grant.organization_id, grant.user_id)
    checksum = settings_checksum(policy.settings)
    headers = {"etag": f'"{checksum}"', "cache-control": "private, no-cache", "vary": "authorization"}
    if _matches(request.headers.get("if-none-match"), checksum):
        return Response(status_code=304, headers=headers)
    document_id = uuid.uuid5(uuid.NAMESPACE_URL, f"orgwarden:{grant.organization_id}:managed-settings:{checksum}")
    body = {"uuid": str(document_id), "checksum": checksum, "settings": policy.settings}
    return JSONResponse(body, headers=headers)
