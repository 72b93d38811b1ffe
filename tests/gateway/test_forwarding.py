"""Forwarding is faithful: what the client sent is what the upstream gets, and back.

The upstream here is ``echo_upstream`` (a stand-in for the model API that reports what it received),
behind a real ``orgwarden serve`` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import BACKENDS, TLS, Server, assert_error, dedicated_server, free_port, query_db, unique

UPSTREAM_KEY = "sk-ant-api03-upstream-global-key"


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "orgwarden.server", "tests.gateway.echo_upstream:app", "--port", str(port),
         "--no-lifespan"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.post(f"{url}/v1/messages", content=b"{}", timeout=1, verify=TLS)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, echo: str) -> Iterator[Server]:
    with dedicated_server(
        request.param, {"ORGWARDEN_UPSTREAM": echo, "ORGWARDEN_UPSTREAM_API_KEY": UPSTREAM_KEY}
    ) as srv:
        yield srv


def new_key(server: Server, workspace_id: str | None = None) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("key"), "workspace_id": workspace_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def report_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(json.loads(response.json()["content"][0]["text"]))


def headers_of(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in report["headers"]]


def test_the_body_reaches_the_upstream_byte_for_byte(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    body = (
        b'{ "model":"claude-sonnet-4-6" ,\n "max_tokens": 5, '
        b'"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}]}'
    )
    response = httpx.post(
        f"{gateway.base_url}/v1/messages",
        content=body,
        headers={"x-api-key": key, "content-type": "application/json"},
        verify=TLS,
    )
    assert base64.b64decode(report_of(response)["body_b64"]) == body


def test_the_upstream_connection_is_kept_alive_unless_the_upstream_closes_it(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.base_url, headers={"x-api-key": key}, verify=TLS) as http:
        ports = [report_of(http.post("/v1/messages", json=body))["client_port"] for _ in range(5)]
        assert len(set(ports)) == 1, f"one request after another should share one upstream connection: {ports}"
        closing = report_of(http.post("/v1/messages?close=1", json=body))["client_port"]
        after = [report_of(http.post("/v1/messages", json=body))["client_port"] for _ in range(2)]
    assert closing == ports[0]
    assert after[0] != closing, "a connection the upstream closed must not be used again"
    assert after[1] == after[0]


def test_a_json_answer_in_hundreds_of_chunks_arrives_whole_and_leaves_the_connection_usable(gateway: Server) -> None:
    """An answer in hundreds of pieces of chunked transfer encoding is relayed whole, and the same
    upstream connection serves the next requests (``test_http1_client`` makes the client pause
    reading on such an answer deterministically)."""
    key = new_key(gateway)["key"]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 3000}]}
    with httpx.Client(base_url=gateway.base_url, headers={"x-api-key": key}, timeout=10, verify=TLS) as http:
        first = http.post("/v1/messages?chunks=400", json=body)
        second = http.post("/v1/messages?chunks=400", json=body)
        third = http.post("/v1/messages", json=body)
    assert first.status_code == second.status_code == third.status_code == 200, first.text
    reports = [report_of(response) for response in (first, second, third)]
    assert {report["client_port"] for report in reports} == {reports[0]["client_port"]}
    assert json.loads(base64.b64decode(reports[1]["body_b64"]))["messages"][0]["content"] == "x" * 3000


def test_a_json_answer_cut_half_way_is_a_502_envelope_not_a_truncated_body(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{gateway.base_url}/v1/messages?drop=1", json=body, headers={"x-api-key": key}, verify=TLS)
    assert response.status_code == 502
    assert response.json()["error"] == {"type": "api_error", "message": "the upstream failed while sending its answer"}
    assert response.json()["request_id"] == response.headers["request-id"]
    # metered from what arrived, marked estimated: input as estimated for the request, output capped
    # at max_tokens (before, the record said no tokens at all)
    request_id = response.headers["request-id"]
    deadline = time.monotonic() + 5
    while not (records := [r for r in records_of(gateway) if r.id == request_id]):
        assert time.monotonic() < deadline, "no usage record"
        time.sleep(0.1)
    (record,) = records
    assert (record.status, record.usage_estimated, record.output_tokens) == (502, True, 5)
    assert record.input_tokens > 0


def records_of(server: Server) -> list[UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return await uow.usage.for_organization(server.organization["id"])

    return query_db(server.db, read)


def test_anthropic_headers_go_along_and_the_credential_is_replaced(gateway: Server) -> None:
    key = new_key(gateway)
    sent = [
        ("authorization", f"Bearer {key['key']}"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "beta-one,beta-two"),
        ("anthropic-beta", "beta-three"),
        ("anthropic-custom-thing", "kept"),
        ("anthropic-allowed-org-ids", gateway.organization["id"]),
        ("anthropic-workspace-id", key["scope"]["workspace_id"]),
        ("x-stainless-lang", "python"),
        ("x-unrelated", "dropped"),
        ("content-type", "application/json"),
    ]
    response = httpx.post(
        f"{gateway.base_url}/v1/messages?beta=true",
        headers=sent,
        json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []},
        verify=TLS,
    )
    report = report_of(response)
    received = headers_of(report)
    assert ("anthropic-version", "2023-06-01") in received
    assert [v for k, v in received if k == "anthropic-beta"] == ["beta-one,beta-two", "beta-three"]
    assert ("anthropic-custom-thing", "kept") in received
    assert ("x-stainless-lang", "python") in received
    assert ("x-api-key", UPSTREAM_KEY) in received
    names = {k for k, _ in received}
    assert "authorization" not in names
    assert "x-unrelated" not in names
    assert not any(k.startswith("anthropic-allowed-org-ids") for k in names)
    assert "anthropic-workspace-id" not in names
    assert report["query"] == "beta=true"
    assert report["path"] == "/v1/messages"


def test_the_response_comes_back_with_orgwarden_headers_added(gateway: Server) -> None:
    key = new_key(gateway)
    response = httpx.post(
        f"{gateway.base_url}/v1/messages",
        headers={"x-api-key": key["key"]},
        json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []},
        verify=TLS,
    )
    assert response.status_code == 200
    assert response.headers["x-upstream-marker"] == "yes"
    assert response.headers["upstream-request-id"] == "req_upstream"
    assert response.headers["request-id"].startswith("req_01")
    assert response.headers["anthropic-organization-id"] == gateway.organization["id"]
    assert response.headers["anthropic-workspace-id"] == key["scope"]["workspace_id"]


def test_a_workspace_upstream_key_takes_precedence_over_the_servers(gateway: Server) -> None:
    admin = gateway.client()
    workspace = admin.organization.workspaces.create(name=unique("ws"))
    key = new_key(gateway, workspace.id)["key"]
    request = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}

    def upstream_key_seen() -> str:
        report = report_of(
            httpx.post(f"{gateway.base_url}/v1/messages", headers={"x-api-key": key}, json=request, verify=TLS)
        )
        return dict(headers_of(report))["x-api-key"]

    assert upstream_key_seen() == UPSTREAM_KEY
    with gateway.http() as http:
        set_ = http.post(f"/v1/organizations/workspaces/{workspace.id}/upstream_key", json={"api_key": "sk-ws-own"})
    assert set_.json() == {"type": "workspace_upstream_key", "workspace_id": workspace.id, "configured": True}
    deadline = time.monotonic() + 1.0
    while upstream_key_seen() != "sk-ws-own":
        assert time.monotonic() < deadline, "the workspace key was not used within 1 s"
        time.sleep(0.05)
    with gateway.http() as http:
        assert http.delete(f"/v1/organizations/workspaces/{workspace.id}/upstream_key").json()["configured"] is False
    deadline = time.monotonic() + 1.0
    while upstream_key_seen() != UPSTREAM_KEY:
        assert time.monotonic() < deadline, "clearing the workspace key took effect later than 1 s"
        time.sleep(0.05)


def test_the_workspace_upstream_key_is_never_returned_or_logged(gateway: Server) -> None:
    admin = gateway.client()
    workspace = admin.organization.workspaces.create(name=unique("ws"))
    secret = "sk-ant-api03-" + "Z" * 40
    with gateway.http() as http:
        http.post(f"/v1/organizations/workspaces/{workspace.id}/upstream_key", json={"api_key": secret})
        assert secret not in http.get(f"/v1/organizations/workspaces/{workspace.id}").text
    assert secret not in gateway.log()


def test_a_stream_is_relayed_event_by_event_without_buffering(gateway: Server) -> None:
    key = new_key(gateway)["key"]
    arrivals: list[float] = []
    started = time.monotonic()
    request = {"model": "claude-sonnet-4-6", "max_tokens": 5, "stream": True, "messages": []}
    with httpx.stream(
        "POST", f"{gateway.base_url}/v1/messages", headers={"x-api-key": key}, json=request, verify=TLS
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            if b"event:" in chunk:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 3
    # The upstream sends an event every 0.3 s: the first must arrive long before the last.
    assert arrivals[-1] - arrivals[0] > 0.45, arrivals


def test_a_workspace_default_geo_is_inserted_and_nothing_else_changes(gateway: Server) -> None:
    admin = gateway.client()
    workspace = admin.organization.workspaces.create(
        name=unique("eu"), data_residency={"allowed_inference_geos": ["us"], "default_inference_geo": "us"}
    )
    key = new_key(gateway, workspace.id)["key"]
    body = b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}'
    report = report_of(
        httpx.post(f"{gateway.base_url}/v1/messages", content=body, headers={"x-api-key": key}, verify=TLS)
    )
    forwarded = base64.b64decode(report["body_b64"])
    assert forwarded == b'{"inference_geo": "us",' + body[1:]
    assert json.loads(forwarded) == {**json.loads(body), "inference_geo": "us"}

    explicit = b'{"model": "claude-sonnet-4-6", "inference_geo": "us", "max_tokens": 5, "messages": []}'
    report = report_of(
        httpx.post(f"{gateway.base_url}/v1/messages", content=explicit, headers={"x-api-key": key}, verify=TLS)
    )
    assert base64.b64decode(report["body_b64"]) == explicit


def test_an_escaped_path_reaches_the_upstream_still_escaped(gateway: Server) -> None:
    """The upstream's request line is built from the path as the client sent it: ``%20`` and ``%3F``
    stay escaped (decoded, the space would split the request line and ``?`` start a query)."""
    key = new_key(gateway)["key"]
    response = httpx.get(f"{gateway.base_url}/v1/models/claude%20x%3Fy", headers={"x-api-key": key}, verify=TLS)
    report = report_of(response)
    assert report["raw_path"] == "/v1/models/claude%20x%3Fy"
    assert report["path"] == "/v1/models/claude x?y"


def test_a_control_character_in_the_path_is_refused_before_the_upstream(gateway: Server) -> None:
    """``%0D%0A`` in the path once put a line break, and a header of the client's choosing, into the
    upstream's request line, next to the organization's key. Now: 400, and the upstream sees nothing."""
    key = new_key(gateway)["key"]
    for path in ("/v1/models/x%0D%0AX-Injected:%20yes", "/v1/models/x%00", "/v1/m%65ssages%0A"):
        response = httpx.get(f"{gateway.base_url}{path}", headers={"x-api-key": key}, verify=TLS)
        assert_error(response, 400, "invalid_request_error", "the request path contains a control character")
