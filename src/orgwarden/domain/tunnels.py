"""MCP tunnels: the rules on their names, hostnames and tokens (no I/O).

A tunnel's token is 256 random bits, URL-safe; its id (``ttkn_`` + 64 hex) is random too, not derived
from the value, so that showing the id tells nothing about the token. A hostname is a random
12-hex-digit label under the configured base domain: 48 bits, so a clash is a rarity that the
service retries past, and the database's unique constraint makes it impossible to hand one out
twice.
"""

from __future__ import annotations

import secrets

TOKEN_ID_PREFIX = "ttkn_"  # noqa: S105 - an id prefix (+ 64 hex, COMPAT.md), not a secret
MAX_DISPLAY_NAME = 255
MAX_REASON = 1000
LABEL_HEX_DIGITS = 12
MAX_CERTIFICATES = 2  # non-archived certificates per tunnel (spec)

# The betas of the two path families (COMPAT.md).
SPEC_BETA = "mcp-tunnels-2026-05-19"
SDK_BETA = "mcp-tunnels-2026-06-22"


def check_display_name(value: str | None) -> str | None:
    """1 to 255 characters, not blank; ``None`` leaves the tunnel unnamed."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError("display_name: must not be empty or blank (send null to leave the tunnel unnamed)")
    if len(value) > MAX_DISPLAY_NAME:
        raise ValueError(f"display_name: must be at most {MAX_DISPLAY_NAME} characters, got {len(value)}")
    return value


def check_reason(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_REASON:
        raise ValueError(f"reason: must be at most {MAX_REASON} characters, got {len(value)}")
    return value


def new_domain(base_domain: str) -> str:
    return f"{secrets.token_hex(LABEL_HEX_DIGITS // 2)}.{base_domain}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_token_id() -> str:
    return TOKEN_ID_PREFIX + secrets.token_hex(32)
