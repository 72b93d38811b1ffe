"""What Claude Code sends, used; and the gateway rules it depends on, through the echo upstream.

One ``orgwarden serve`` (SQLite) in front of ``echo_upstream`` (which reports what it received),
with the opt-in identity header on. The headers are those the real Claude Code CLI 2.1.332 sends
(seen against a logging server): ``x-claude-code-session-id`` on every Messages call,
``x-claude-code-agent-id`` on a subagent's, ``anthropic-beta`` as one comma list,
``anthropic-version: 2023-06-01``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.attrib.test_user_tokens_data_plane import new_team
from tests.conftest import TLS, Server, dedicated_server, query_db
from tests.gateway.test_forwarding import UPSTREAM_KEY, echo, headers_of, new_key, report_of

__all__ = ["echo"]  # the echo upstream fixture, shared

BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,effort-2025-11-24"
REQUEST = {"model": "claude-opus-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(echo: str) -> Iterator[Server]:
    settings = {"ORGWARDEN_UPSTREAM": echo, "ORGWARDEN_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "ORGWARDEN_UPSTREAM_IDENTITY_HEADER": "X-Orgwarden-User"}  # fmt: skip
    with dedicated_server("sqlite", settings) as srv:
        yield srv


def claude_code_headers(credential: dict[str, str], session: str, **extra: str) -> dict[str, str]:
    return {**credential, "anthropic-version": "2023-06-01", "anthropic-beta": BETA, "x-app": "cli",
            "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
            "x-claude-code-session-id": session, **extra}  # fmt: skip


def records(server: Server) -> dict[str, UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return list(await uow.usage.for_organization(server.organization["id"]))

    return {r.id: r for r in query_db(server.db, read)}


def wait_for(server: Server, request_id: str) -> UsageRecord:
    deadline = time.monotonic() + 15
    while True:
        found = records(server).get(request_id)
        if found is not None or time.monotonic() > deadline:
            assert found is not None, f"no usage record for {request_id}"
            return found
        time.sleep(0.1)


def test_session_and_agent_ids_go_on_the_users_usage_and_the_claude_code_report(gateway: Server) -> None:
    team = new_team(gateway)
    bearer = {"authorization": f"Bearer {team.token}"}
    main, other = str(uuid.uuid4()), str(uuid.uuid4())
    with httpx.Client(base_url=gateway.base_url, timeout=30, verify=TLS) as http:
        first = http.post("/v1/messages?beta=true", json=REQUEST, headers=claude_code_headers(bearer, main))
        sub = http.post("/v1/messages?beta=true", json=REQUEST,
                        headers=claude_code_headers(bearer, main,
                                                    **{"x-claude-code-agent-id": "agent-7f3a"}))  # fmt: skip
        again = http.post("/v1/messages?beta=true", json={**REQUEST, "stream": True},
                          headers=claude_code_headers(bearer, other))  # fmt: skip
        long = http.post("/v1/messages", json=REQUEST, headers=claude_code_headers(bearer, "x" * 500))
    for response in (first, sub, again, long):
        assert response.status_code == 200, response.text
    row = wait_for(gateway, first.headers["request-id"])
    assert (row.user_id, row.claude_code_session_id, row.claude_code_agent_id) == (team.user["id"], main, None)
    assert wait_for(gateway, sub.headers["request-id"]).claude_code_agent_id == "agent-7f3a"
    assert wait_for(gateway, again.headers["request-id"]).claude_code_session_id == other
    cut = wait_for(gateway, long.headers["request-id"]).claude_code_session_id
    assert cut is not None
    assert (len(cut), cut[-1]) == (64, "…")  # bounded to its column
    # No OTLP export at all: the Claude Code report still shows the user's sessions (3 distinct ids).
    today = datetime.now(UTC).date().isoformat()
    with gateway.http() as admin:
        report = admin.get("/v1/organizations/usage_report/claude_code", params={"starting_at": today})
    assert report.status_code == 200, report.text
    mine = [r for r in report.json()["data"] if r["actor"].get("email_address") == team.user["email"]]
    assert len(mine) == 1, report.json()
    assert mine[0]["core_metrics"]["num_sessions"] == 3


def test_the_identity_header_names_the_user_or_key_and_the_clients_own_is_dropped(gateway: Server) -> None:
    team = new_team(gateway)
    key = new_key(gateway)
    forged = {"x-orgwarden-user": "ceo@acme.test", "X-ORGWARDEN-USER": "root"}
    with httpx.Client(base_url=gateway.base_url, timeout=30, verify=TLS) as http:
        as_user = http.post("/v1/messages", json=REQUEST,
                            headers={"authorization": f"Bearer {team.token}", **forged})  # fmt: skip
        as_key = http.post("/v1/messages", json=REQUEST, headers={"x-api-key": key["key"], **forged})
    seen_user = [v for k, v in headers_of(report_of(as_user)) if k.lower() == "x-orgwarden-user"]
    seen_key = [v for k, v in headers_of(report_of(as_key)) if k.lower() == "x-orgwarden-user"]
    assert seen_user == [team.user["email"]]
    assert seen_key == [key["id"]]


def test_beta_and_version_reach_the_upstream_verbatim(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    headers = claude_code_headers({"x-api-key": key}, str(uuid.uuid4()), **{"anthropic-version": "2026-10-21"})
    with httpx.Client(base_url=gateway.base_url, timeout=30, verify=TLS) as http:
        response = http.post("/v1/messages?beta=true", json=REQUEST, headers=headers)
    seen = headers_of(report_of(response))
    assert [v for k, v in seen if k.lower() == "anthropic-beta"] == [BETA]
    assert [v for k, v in seen if k.lower() == "anthropic-version"] == ["2026-10-21"]


def test_a_stream_is_relayed_unbuffered_with_its_pings(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    events: list[tuple[str, float]] = []
    started = time.monotonic()
    request = {**REQUEST, "stream": True}
    with httpx.stream(
        "POST", f"{gateway.base_url}/v1/messages", headers={"x-api-key": key}, json=request, verify=TLS
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append((line[7:], time.monotonic() - started))
    names = [name for name, _ in events]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]
    # The echo upstream sends one event every 0.3 s: the first arrives well before the last is sent.
    assert events[-1][1] - events[0][1] > 0.6, events


def test_the_access_log_is_not_needed_for_sessions_but_shows_them(gateway: Server) -> None:
    """The server's log holds the access line with ``session="<id>"`` (the sessions' header value)."""
    key = new_key(gateway)["key"]
    session = str(uuid.uuid4())
    with httpx.Client(base_url=gateway.base_url, timeout=30, verify=TLS) as http:
        response = http.post("/v1/messages", json=REQUEST, headers=claude_code_headers({"x-api-key": key}, session))
    assert response.status_code == 200
    request_id = response.headers["request-id"]
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in gateway.log().splitlines() if request_id in line and "orgwarden.access" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines, request_id
    assert f'session="{session}"' in lines[0], lines
