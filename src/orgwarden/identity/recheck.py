"""Asking the identity provider again whether a signed-in person may still act.

A device sign-in keeps the identity provider's refresh token (sealed). Each refresh of the
sign-in's orgwarden tokens first refreshes that one at the IdP: an IdP that no longer knows the
person (deactivated, deleted, consent revoked) answers ``invalid_grant``, and the sign-in ends.
This module is the seam between the token service and the OpenID Connect client, so the service
(and every CLI command that builds it) does not import Authlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from orgwarden.crypto import SecretBox

MAX_IDP_REFRESH_TOKEN_CHARS = 8192  # Entra's are about 1-2 KB, Okta's and Keycloak's shorter; longer is not kept
IDP_REFRESH_BOUND = "orgwarden idp refresh token v1:"  # + the row id the sealed value belongs to


@dataclass(frozen=True, slots=True)
class IdpRecheck:
    """The identity provider's answer to a refresh grant."""

    outcome: Literal["ok", "refused", "unavailable"]
    refresh_token: str | None = None  # "ok": the IdP's new refresh token (None: keep the one we have)
    detail: str = ""  # "refused" / "unavailable": what the IdP said (never a token), for the audit event


class IdpRechecker(Protocol):
    async def recheck(self, refresh_token: str) -> IdpRecheck:
        """Refresh ``refresh_token`` at the identity provider."""
        ...


def keepable(refresh_token: object) -> str | None:
    """The IdP's refresh token if it is one we may store (a bounded string), else ``None``."""
    if isinstance(refresh_token, str) and 0 < len(refresh_token) <= MAX_IDP_REFRESH_TOKEN_CHARS:
        return refresh_token
    return None


def seal(box: SecretBox, refresh_token: str, row_id: str) -> str:
    """The IdP's refresh token encrypted for one row (a session, a device authorization, a family)."""
    return box.seal(refresh_token, IDP_REFRESH_BOUND + row_id)


def unseal(box: SecretBox, sealed: str | None, row_id: str) -> str | None:
    """The token ``seal`` stored on ``row_id``; ``None`` without one, or when it does not decrypt (the
    server secret changed): the sign-in then goes on without an IdP re-check, bounded by its age."""
    if sealed is None:
        return None
    try:
        return box.open(sealed, IDP_REFRESH_BOUND + row_id)
    except (ValueError, UnicodeDecodeError):
        return None
