"""SCIM fixtures: a server per backend per module, and a SCIM token made with the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TLS, Server, cli


def scim_token(server: Server) -> str:
    created = json.loads(cli(server.db, "scim-token", "create", "--json").stdout)
    assert set(created) == {"id", "token"}
    return str(created["token"])


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return scim_token(server)


@pytest.fixture
def scim(server: Server, token: str) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/scim+json"}
    with httpx.Client(base_url=f"{server.base_url}/scim/v2", headers=headers, timeout=30, verify=TLS) as client:
        yield client
