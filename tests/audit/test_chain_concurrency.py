"""One chain per organization, even with two ``orgwarden serve`` processes on one PostgreSQL database
writing at once: Admin API mutations (sealed in the use case's transaction, after the organization
lock) and tenant-restriction refusals (sealed by each instance's recorder, in batches) race for the
chain head; afterwards the chain verifies, seq runs 1..N with no gap and no fork, and every event
is there. A deadlock or a seq collision would show as a 500, a traceback in a server log, or a
missing event.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from orgwarden.config import load_settings
from orgwarden.services.audit_log import AuditLogService, Verification
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import TLS, Server, another_instance, dedicated_server, stop_server, unique

THREADS = 8
ROUNDS = 10
OTHER_ORG = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def verify(server: Server) -> Verification:
    settings = load_settings(**server.db.settings_kwargs)

    async def run() -> Verification:
        engine = create_engine(settings)
        try:
            return await AuditLogService(UnitOfWorkFactory(session_factory(engine))).verify(server.organization["id"])
        finally:
            await engine.dispose()

    return asyncio.run(run())


def count(server: Server, **params: str) -> int:
    total, page = 0, None
    with server.http() as h:
        while True:
            body = h.get(
                "/v1/organizations/audit_logs", params={**params, "limit": "1000", **({"page": page} if page else {})}
            ).json()
            total += len(body["data"])
            page = body["next_page"]
            if page is None:
                return total


def test_two_instances_writing_at_once_keep_one_unbroken_chain(tmp_path: Path) -> None:
    with dedicated_server("postgres", {}) as first:
        second = another_instance(first, tmp_path)
        try:
            with first.http() as h:
                key = h.post("/v1/organizations/api_keys", json={"name": "racer", "workspace_id": None}).json()
            before = count(first)

            def race(worker: int) -> list[int]:
                mine, other = (first, second) if worker % 2 else (second, first)
                statuses = []
                with mine.http() as admin, httpx.Client(base_url=other.base_url, timeout=30, verify=TLS) as data:
                    headers = {"x-api-key": key["key"], "anthropic-allowed-org-ids": OTHER_ORG}
                    for _ in range(ROUNDS):
                        statuses.append(admin.post("/v1/organizations/workspaces", json={"name": unique("race")})
                                        .status_code)  # fmt: skip
                        statuses.append(data.post("/v1/messages", headers=headers, json=MESSAGE).status_code)
                return statuses

            with ThreadPoolExecutor(THREADS) as pool:
                statuses = [s for batch in pool.map(race, range(THREADS)) for s in batch]
            assert sorted(set(statuses)) == [200, 403]
        finally:
            stop_server(second)  # a graceful stop writes what its recorder still holds
        expected = before + THREADS * ROUNDS * 2
        deadline = time.monotonic() + 10
        while count(first) < expected and time.monotonic() < deadline:
            time.sleep(0.1)

        assert count(first, action="workspace.create") == 1 + THREADS * ROUNDS
        assert count(first, action="tenant_restriction.check") == THREADS * ROUNDS
        result = verify(first)
        assert result.broken is None
        assert (result.events, result.head.seq) == (expected, expected)
        with first.http() as h:
            seqs = [e["seq"] for e in h.get("/v1/organizations/audit_logs", params={"limit": 1000}).json()["data"]]
        assert seqs == list(range(expected, 0, -1))
        for server in (first, second):  # a recorder that lost a race for a seq logs it, and retries
            assert "cannot write" not in server.log(), server.log()
