"""The harness itself: a real server per backend answers /health and /me."""

from __future__ import annotations

import anthropic

from tests.conftest import TLS, Server


def test_health_needs_no_credentials(server: Server) -> None:
    import httpx

    response = httpx.get(f"{server.base_url}/health", verify=TLS)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "dependencies": {"database": "up"},
        "limits": {"store": "memory", "unchecked_requests": 0},
    }


def test_me_returns_the_organization_created_by_init(server: Server, client: anthropic.Anthropic) -> None:
    org = client.organization.retrieve()
    assert org.id == server.organization["id"]
    assert org.name == "Acme"
    assert org.type == "organization"
