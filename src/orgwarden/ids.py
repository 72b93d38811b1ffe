"""Tagged identifiers and credential formats.

Ids look like Anthropic's: ``<prefix>_`` + 24 characters that start with ``01``. The next nine
characters encode the creation time in milliseconds in an ASCII-ordered base-62 alphabet, so ids sort
in creation order both in Python and in the database (which compares them byte-wise: see
``storage.types.IdString``). Cursor pagination relies on that. Within one millisecond a process
increments the random tail, so ids it makes are strictly increasing.

Secrets are high-entropy random strings; only their SHA-256 is stored (a slow password hash would
add nothing against 550 bits of entropy, and would cost every request a lot of CPU).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import threading
import time
import uuid

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE = len(ALPHABET)
_TIME_CHARS = 9
_RANDOM_CHARS = 13
_RANDOM_SPACE: int = _BASE**_RANDOM_CHARS
_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

WORKSPACE = "wrkspc"
USER = "user"
API_KEY = "apikey"
INVITE = "invite"
REQUEST = "req"
AUDIT_EVENT = "evt"
SPEND_LIMIT = "spl"
TUNNEL = "tnl"
TUNNEL_CERTIFICATE = "tcrt"

API_KEY_PREFIX = "sk-ant-api03-"
ADMIN_KEY_PREFIX = "sk-ant-admin01-"
_SECRET_BODY_CHARS = 93

_lock = threading.Lock()
_last = (0, 0)
# The random part of an id only keeps the ids of different processes apart; it is not a secret (ids
# are public: they appear in URLs and responses, and knowing one authorizes nothing), so it comes
# from ``random`` (seeded from the OS at start and again in a forked child) rather than ``secrets``,
# whose ``os.urandom`` system call on every request was most of the cost of naming one.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # base-62 two digits at a time
_time_part = (0, "")  # the last millisecond encoded: ids of the same millisecond share it


def _random_half() -> int:
    """Uniform enough below ``_RANDOM_SPACE // 2`` (96 random bits reduced: a bias under 2**-19)."""
    return _random.getrandbits(96) % (_RANDOM_SPACE // 2)


def _encode(value: int, width: int) -> str:
    """``value`` in ``width`` base-62 digits (most significant first), two digits per step."""
    pairs = []
    for _ in range(width // 2):
        value, rem = divmod(value, _BASE * _BASE)
        pairs.append(_PAIRS[rem])
    if width % 2:
        pairs.append(ALPHABET[value % _BASE])
    return "".join(reversed(pairs))


def new_id(prefix: str) -> str:
    """A fresh, time-ordered id such as ``wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ``."""
    global _last, _time_part
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        last_ms, last_rand = _last
        if now_ms <= last_ms:
            now_ms, rand = last_ms, last_rand + 1
            if rand >= _RANDOM_SPACE:  # pragma: no cover - 62**13 ids in one millisecond
                now_ms, rand = last_ms + 1, _random_half()
        else:
            rand = _random_half()  # leaves room to count up
        _last = (now_ms, rand)
        cached_ms, time_chars = _time_part
        if cached_ms != now_ms:
            time_chars = _encode(now_ms, _TIME_CHARS)
            _time_part = (now_ms, time_chars)
    return f"{prefix}_01{time_chars}{_encode(rand, _RANDOM_CHARS)}"


def looks_like(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id with this prefix (no database look-up)."""
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 24 and all(c in ALPHABET for c in body)


def new_organization_id() -> str:
    return str(uuid.uuid4())


def new_request_id() -> str:
    return new_id(REQUEST)


def _random_body(length: int) -> str:
    return "".join(secrets.choice(_URLSAFE) for _ in range(length))


def new_api_key_secret() -> str:
    """``sk-ant-api03-`` + 93 URL-safe characters + ``AA``, the shape of an Anthropic API key."""
    return f"{API_KEY_PREFIX}{_random_body(_SECRET_BODY_CHARS)}AA"


def new_admin_key_secret() -> str:
    return f"{ADMIN_KEY_PREFIX}{_random_body(_SECRET_BODY_CHARS)}AA"


def new_token() -> str:
    """An opaque single-use token (invites): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def partial_hint(secret: str) -> str:
    """``sk-ant-api03-R2D...igAA``: the prefix, three characters, and the last four."""
    for prefix in (API_KEY_PREFIX, ADMIN_KEY_PREFIX):
        if secret.startswith(prefix):
            return f"{prefix}{secret[len(prefix) : len(prefix) + 3]}...{secret[-4:]}"
    return f"{secret[:3]}...{secret[-4:]}"
