"""An independent SCIM 2.0 compliance checker (``scim2-tester``, PyPI) against the real server."""

from __future__ import annotations

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.conftest import Server


def test_the_scim_compliance_checker_passes_against_the_server(server: Server, token: str) -> None:
    with httpx2.Client(
        base_url=f"{server.base_url}/scim/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        client = SyncSCIMClient(http)
        results = check_server(client)
    failed = [r for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    assert results
    assert not failed, "\n".join(f"{r.resource_type} {r.title}: {r.reason}" for r in failed)
    passed = [r for r in results if r.status == Status.SUCCESS]
    assert len(passed) > 50, [r.title for r in results]
