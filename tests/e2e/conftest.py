"""Fixtures of the end-to-end tests: certificates per module, ``mitmdump`` once per session (``mitm.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import mitm


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> mitm.Certificates:
    return mitm.make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def mitmdump_executable() -> Path:
    """``mitmdump`` from a cached virtualenv (built once, under a lock, reused while it works)."""
    return mitm.mitmdump_executable()
