"""Fixtures of the end-to-end tests: certificates per module, ``mitmdump`` once per session (``mitm.py``)."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def corporate_proxy(
    mitmdump_executable: Path, certificates: mitm.Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mitm.Proxy]:
    """mitmdump as the company's egress proxy, inspecting TLS with the test CA."""
    proxy, process = mitm.start_mitmdump(mitmdump_executable, tmp_path_factory.mktemp("proxy"), certificates.ca)
    try:
        yield proxy
    finally:
        mitm.stop_process(process)
