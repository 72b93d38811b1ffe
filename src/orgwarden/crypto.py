"""Encryption at rest for stored credentials (workspace upstream keys), with the server secret.

AES-256-GCM under a key derived from ``ORGWARDEN_SECRET_KEY`` with HKDF-SHA256; the stored form is
``v1:<base64(nonce || ciphertext)>`` and the record's id is bound in as associated data, so a
ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orgwarden.config import Settings
from orgwarden.errors import ConfigError

_VERSION = "v1:"
SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret


class SecretBox:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"orgwarden credentials v1").derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, bound_to: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, bound_to: str) -> str:
        if not stored.startswith(_VERSION):
            raise ValueError("unknown ciphertext version")
        raw = base64.b64decode(stored[len(_VERSION) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], bound_to.encode()).decode()
        except InvalidTag:
            raise ValueError("cannot decrypt: wrong ORGWARDEN_SECRET_KEY, or the value was tampered with") from None


def resolve_secret(settings: Settings) -> str:
    """The server secret: the setting, or (SQLite only) ``<data_dir>/secret.key``, created once."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if not settings.is_sqlite:
        raise ConfigError(
            "invalid setting ORGWARDEN_SECRET_KEY: required with PostgreSQL (every instance must share it)"
        )
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first (``serve`` makes it before workers start)
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip()
