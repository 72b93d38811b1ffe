"""Tunnels and tunnel certificates to wire objects: the spec's fields, which the SDK's models also read.

Kept apart from ``render`` so the tunnel feature is one set of modules; the shapes are built by hand,
as there, to say exactly what goes on the wire. A token appears only in ``tunnel_token`` (the answer
of reveal and rotate).
"""

from __future__ import annotations

from typing import Any

from orgwarden.domain.clock import rfc3339
from orgwarden.services.tunnels import RevealedToken, Shown, TokenCheck
from orgwarden.storage.tables import TunnelCertificate

JSON = dict[str, Any]


def tunnel(shown: Shown) -> JSON:
    """The spec's tunnel (``workspace_id`` null for the default workspace); the SDK ignores that field."""
    row = shown.tunnel
    return {
        "id": row.id,
        "archived_at": rfc3339(row.archived_at),
        "created_at": rfc3339(row.created_at),
        "display_name": row.display_name,
        "domain": row.domain,
        "type": "tunnel",
        "workspace_id": shown.workspace_id,
    }


def tunnel_token(token: RevealedToken) -> JSON:
    return {"id": token.token_id, "tunnel_token": token.token, "type": "tunnel_token"}


def tunnel_certificate(row: TunnelCertificate) -> JSON:
    return {
        "id": row.id,
        "archived_at": rfc3339(row.archived_at),
        "created_at": rfc3339(row.created_at),
        "expires_at": rfc3339(row.expires_at),
        "fingerprint": row.fingerprint,
        "tunnel_id": row.tunnel_id,
        "type": "tunnel_certificate",
    }


def tunnel_token_check(check: TokenCheck) -> JSON:
    """Extension: whether a presented token opens a tunnel now (never echoes the token)."""
    row = check.tunnel
    return {
        "type": "tunnel_token_check",
        "valid": check.valid,
        "tunnel_id": row.id if row else None,
        "domain": row.domain if row else None,
        "token_id": row.token_id if row else None,
    }
