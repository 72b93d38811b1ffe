"""Who made a request, told to an upstream proxy behind orgwarden (opt-in).

With ``ORGWARDEN_UPSTREAM_IDENTITY_HEADER=x-orgwarden-user`` every request orgwarden forwards
carries that header: a user's access token gives the user's email (or ``user_…`` id with
``ORGWARDEN_UPSTREAM_IDENTITY=user_id``), an API key its ``apikey_…`` id. A header of that name the
client sent is dropped first, whatever its case, so the upstream never reads a value the client
chose. Off by default: then nothing here runs.
"""

from __future__ import annotations

from orgwarden.services.credentials import KeyGrant


class UpstreamIdentity:
    __slots__ = ("by_email", "name")

    def __init__(self, name: str, identity: str = "email") -> None:
        self.name = name.lower().encode("latin-1")
        self.by_email = identity == "email"

    def value(self, grant: KeyGrant) -> bytes:
        """The header's value for ``grant`` (ASCII: an email that is not falls back to the user id)."""
        if grant.user_id is None:
            return grant.key_id.encode()
        email = grant.user_email
        if self.by_email and email and email.isascii() and email.isprintable():
            return email.encode()
        return grant.user_id.encode()

    def apply(self, headers: list[tuple[bytes, bytes]], grant: KeyGrant) -> list[tuple[bytes, bytes]]:
        """``headers`` (as forwarded) without any of the client's header of this name, plus ours."""
        name = self.name
        kept = [(key, value) for key, value in headers if key.lower() != name]
        kept.append((name, self.value(grant)))
        return kept
