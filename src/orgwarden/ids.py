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
USER_TOKEN = "utok"  # noqa: S105 - a prefix, not a secret
USER_TOKEN_FAMILY = "utfam"  # noqa: S105 - a prefix, not a secret
USER_SESSION = "uses"
DEVICE_AUTHORIZATION = "devauth"

API_KEY_PREFIX = "sk-ant-api03-"
ADMIN_KEY_PREFIX = "sk-ant-admin01-"
_SECRET_BODY_CHARS = 93
# A signed-in user's credentials (issue 16): OAuth access and refresh tokens and the browser session
# cookie. The prefix says what a leaked string is (secret scanners key on it); 256 random bits follow.
USER_ACCESS_TOKEN_PREFIX = "ow-at01-"  # noqa: S105 - a prefix, not a secret
USER_REFRESH_TOKEN_PREFIX = "ow-rt01-"  # noqa: S105 - a prefix, not a secret
USER_SESSION_PREFIX = "ow-ses01-"

# The random part of an id only keeps the ids of different processes apart; it is not a secret (ids
# are public: they appear in URLs and responses, and knowing one authorizes nothing), so it comes
# from ``random`` (seeded from the OS at start and again in a forked child) rather than ``secrets``,
# whose ``os.urandom`` system call on every request was most of the cost of naming one.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # base-62 two digits at a time
# The random tail as a number is ``high * _LOW_SPACE + low``: its last five digits (``low``) fit one
# CPython digit (62**5 < 2**30), its first eight are encoded once when drawn and kept as text.
_LOW_CHARS = 5
_LOW_SPACE: int = _BASE**_LOW_CHARS
_HIGH_CHARS = _RANDOM_CHARS - _LOW_CHARS
_HIGH_SPACE: int = _BASE**_HIGH_CHARS


def _encode(value: int, width: int) -> str:
    """``value`` in ``width`` base-62 digits (most significant first), two digits per step."""
    text = ""
    for _ in range(width // 2):
        value, rem = divmod(value, _BASE * _BASE)
        text = _PAIRS[rem] + text
    return ALPHABET[value % _BASE] + text if width % 2 else text


class _Sequence:
    """The last id's millisecond and random tail, and its first 19 characters as text.

    Within a millisecond an id is the previous one plus one, so all but the low five digits of the
    tail stay as they were: only those are encoded per id, from a number small enough for CPython's
    fast arithmetic (encoding all 24 characters each time was most of the cost of an id)."""

    __slots__ = ("head", "high", "low", "ms", "period", "period_text")

    def __init__(self) -> None:
        self.ms = 0
        self.high = 0
        self.low = 0
        self.head = ""  # "01", the time part, the high digits of the tail
        self.period = -1  # the time part but its last two digits (a period of 3.844 s), and its text
        self.period_text = ""

    def start(self, ms: int, high: int, low: int) -> None:
        self.ms, self.high, self.low = ms, high, low
        period, last = divmod(ms, _BASE * _BASE)
        if period != self.period:
            self.period, self.period_text = period, _encode(period, _TIME_CHARS - 2)
        self.head = f"01{self.period_text}{_PAIRS[last]}{_encode(high, _HIGH_CHARS)}"

    def advance(self, now_ms: int) -> None:
        """Move on to the next id when ``new_id``'s own fast path (one more in the same
        millisecond, no carry out of the low digits) does not apply: a fresh random tail in a later
        millisecond (drawn below half of the tail's space, which leaves room to count up), or a
        carry into the high digits."""
        if now_ms > self.ms:
            # Uniform enough below half the tail's space (each reduction has a bias under 2**-19).
            high = _random.getrandbits(72) % (_HIGH_SPACE // 2)
            self.start(now_ms, high, _random.getrandbits(50) % _LOW_SPACE)
        elif self.low + 1 < _LOW_SPACE:
            self.low += 1
        elif self.high + 1 < _HIGH_SPACE:
            self.start(self.ms, self.high + 1, 0)
        else:  # pragma: no cover - 62**13 ids in one millisecond
            self.advance(self.ms + 1)


_lock = threading.Lock()
_sequence = _Sequence()


def new_id(prefix: str) -> str:
    """A fresh, time-ordered id such as ``wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ``."""
    now_ms = time.time_ns() // 1_000_000
    sequence = _sequence
    with _lock:
        low = sequence.low + 1
        if now_ms <= sequence.ms and low < _LOW_SPACE:  # the common case, spelled out here
            sequence.low = low
        else:
            sequence.advance(now_ms)
            low = sequence.low
        head = sequence.head
    low, a = divmod(low, _BASE * _BASE)
    c, b = divmod(low, _BASE * _BASE)
    return f"{prefix}_{head}{ALPHABET[c]}{_PAIRS[b]}{_PAIRS[a]}"


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


def new_user_access_token() -> str:
    return USER_ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_user_refresh_token() -> str:
    return USER_REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_session_secret() -> str:
    return USER_SESSION_PREFIX + secrets.token_urlsafe(32)


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
