"""Stored credentials are sealed to their row and unreadable without the server secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orgwarden.config import load_settings
from orgwarden.crypto import SecretBox, resolve_secret
from orgwarden.errors import ConfigError

SECRET = "x" * 40


def test_a_sealed_value_opens_only_for_its_row_and_secret() -> None:
    box = SecretBox(SECRET)
    sealed = box.seal("sk-upstream", "wrkspc_A")
    assert "sk-upstream" not in sealed
    assert box.open(sealed, "wrkspc_A") == "sk-upstream"
    with pytest.raises(ValueError, match="cannot decrypt"):
        box.open(sealed, "wrkspc_B")
    with pytest.raises(ValueError, match="cannot decrypt"):
        SecretBox("y" * 40).open(sealed, "wrkspc_A")
    assert box.seal("sk-upstream", "wrkspc_A") != sealed  # a fresh nonce every time


def test_sqlite_installations_get_a_private_generated_secret(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    first = resolve_secret(settings)
    assert len(first) == 64
    assert resolve_secret(settings) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode)
    assert mode == 0o600


def test_postgresql_installations_must_be_given_a_secret() -> None:
    settings = load_settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="ORGWARDEN_SECRET_KEY"):
        resolve_secret(settings)
    assert resolve_secret(load_settings(database_url="postgresql://x@h/db", secret_key=SECRET)) == SECRET


def test_a_weak_secret_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="ORGWARDEN_SECRET_KEY"):
        load_settings(secret_key="changethis")
