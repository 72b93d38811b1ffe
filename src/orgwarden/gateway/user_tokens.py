"""The data plane's answer to a user access token (``ow-at01-…``), from what the key cache holds.

``pipeline.authenticate`` hands a token's cached answer here, so that a refusal names a token, not
an API key: an unknown, expired or revoked token (or one whose user is gone) is 401
``authentication_error`` telling the developer to get a fresh one; a live token that may not call
the API (no workspace, no role there: ``domain.user_access``) is 403 ``permission_error``.
"""

from __future__ import annotations

from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.statuses import api_key_status
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.credentials import Answer, KeyGrant, UserTokenRefused

# Claude Code retries a 401 with backoff for about three minutes unless told not to; a dead token will
# not come back to life, so it is asked to sign in again at once.
NO_RETRY = [(b"x-should-retry", b"false")]
INVALID = (
    "invalid access token: it is unknown, expired or revoked, or its user is no longer active;"
    " run `orgwarden token` (or `orgwarden login`) for a new one"
)


def user_token_grant(answer: Answer, surface: str) -> KeyGrant:
    """The grant of a user access token that may call ``surface``, or the refusal."""
    if isinstance(answer, UserTokenRefused):
        raise Refusal(403, "permission_error", f"{answer.message} (calling {surface})")
    if not isinstance(answer, KeyGrant) or answer.user_id is None:
        raise Refusal(401, "authentication_error", INVALID, headers=NO_RETRY)
    if api_key_status(answer.status, answer.expires_at, utcnow()) == "expired":  # expired while cached
        raise Refusal(
            401,
            "authentication_error",
            f"this access token expired at {rfc3339(answer.expires_at)}; run `orgwarden token` for a new one",
            headers=NO_RETRY,
        )
    return answer
