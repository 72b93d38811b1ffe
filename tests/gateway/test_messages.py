"""The data plane as its clients see it: the official SDK pointed at orgwarden with an orgwarden key.

Covers the endpoints (``messages.create``, ``messages.stream``, ``messages.count_tokens``,
``models.list``, ``models.retrieve``) in both auth styles, every refusal with its status, error type
and message, data residency, upstream failures (simulator faults, timeout, cut streams, an
unreachable upstream), the headers orgwarden adds, and faithful forwarding: the bytes the client gets
are the bytes the simulator produced, through the in-process simulator and through a real HTTP
upstream (the stand-alone ``orgwarden simulator``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from orgwarden.data import load_catalog
from orgwarden.gateway.simulator import Simulator
from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import (
    ORGWARDEN,
    TLS,
    Server,
    assert_error,
    dedicated_server,
    drop_database,
    free_port,
    make_database,
    query_db,
    start_server,
    stop_server,
    unique,
)

MODEL = MODEL_ID = "claude-sonnet-4-6"  # $3 / $15 per MTok
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Hello, orgwarden"}]
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": MESSAGES}
SIMULATED_TEXT = "Hello from the orgwarden simulator."


# --------------------------------------------------------------------------------------------------
# helpers


def create_key(server: Server, workspace_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A data-plane API key made with the Admin API extension; ``key`` holds the secret."""
    with server.http() as http:
        response = http.post(
            "/v1/organizations/api_keys", json={"name": unique("key"), "workspace_id": workspace_id, **extra}
        )
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["key"].startswith("sk-ant-api03-"), body
    return body


def key_workspace(key: dict[str, Any]) -> str:
    return str(key["scope"]["workspace_id"] if key.get("scope") else key["workspace_id"])


class Recorded(httpx2.BaseTransport):
    """A transport for the SDK's HTTP client that remembers the headers of every request it sends."""

    def __init__(self) -> None:
        self.headers: list[httpx2.Headers] = []
        self._inner = httpx2.HTTPTransport()
        self.client = httpx2.Client(transport=self, timeout=30)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.headers.append(request.headers)
        return self._inner.handle_request(request)


def sdk(server: Server, key: str, style: str, recorded: Recorded | None = None) -> anthropic.Anthropic:
    """The official SDK with ``key`` as ``Authorization: Bearer`` (what it does with ``api_key``)
    or as an ``x-api-key`` header (no SDK credential, the key in a default header)."""
    extra: dict[str, Any] = {"http_client": recorded.client} if recorded else {}
    if style == "x-api-key":
        return anthropic.Anthropic(
            api_key=None,
            auth_token=None,
            default_headers={"x-api-key": key},
            base_url=server.base_url,
            max_retries=0,
            **extra,
        )
    return anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0, **extra)


def assert_auth_style(recorded: Recorded, key: str, style: str) -> None:
    assert recorded.headers, "the SDK sent nothing"
    for headers in recorded.headers:
        if style == "x-api-key":
            assert headers.get("x-api-key") == key
            assert "authorization" not in headers
        else:
            assert headers.get("authorization") == f"Bearer {key}"
            assert "x-api-key" not in headers


def assert_gateway_headers(
    response: httpx.Response | httpx2.Response, server: Server, workspace_id: str | None
) -> None:
    """orgwarden's own headers: request id, organization, and (after authentication) workspace."""
    assert response.headers["request-id"].startswith("req_"), response.headers
    assert response.headers["anthropic-organization-id"] == server.organization["id"], response.headers
    if workspace_id is not None:
        assert response.headers["anthropic-workspace-id"] == workspace_id, response.headers


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for every event of an SSE body; every event must carry an ``event:`` line."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: "), block
        data = "".join(line.removeprefix("data: ") for line in lines[1:] if line.startswith("data: "))
        events.append((lines[0].removeprefix("event: "), json.loads(data)))
    return events


def read_records(server: Server) -> dict[str, UsageRecord]:
    async def read(uow: UnitOfWork) -> dict[str, UsageRecord]:
        return {row.id: row for row in await uow.usage.for_organization(server.organization["id"])}

    return query_db(server.db, read)


def wait_for_record(server: Server, request_id: str, timeout: float = 5.0) -> UsageRecord:
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(server)
        if request_id in records:
            return records[request_id]
        assert time.monotonic() < deadline, f"no usage record for {request_id} after {timeout}s"
        time.sleep(0.1)


def simulate(request: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    """Ask the built-in simulator itself, in this process, what it answers to ``request``."""

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=Simulator(load_catalog(None)))
        async with httpx.AsyncClient(transport=transport, base_url="http://simulator.test") as client:
            response = await client.post("/v1/messages", json=request, headers=headers or {})
            await response.aread()
            return response

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def key(server: Server) -> dict[str, Any]:
    """An active key in the default workspace, shared by the tests of a module."""
    return create_key(server)


@pytest.fixture
def http(server: Server, key: dict[str, Any]) -> Iterator[httpx.Client]:
    with server.http(key["key"]) as client:
        yield client


# --------------------------------------------------------------------------------------------------
# the SDK, both auth styles


STYLES = ["bearer", "x-api-key"]


@pytest.mark.parametrize("style", STYLES)
def test_the_sdk_creates_a_message_with_an_orgwarden_key_in_either_auth_style(
    server: Server, key: dict[str, Any], style: str
) -> None:
    recorded = Recorded()
    client = sdk(server, key["key"], style, recorded)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL_ID
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith(SIMULATED_TEXT)
    assert message.usage.output_tokens == 16
    assert message.usage.input_tokens > 0
    assert_gateway_headers(raw.http_response, server, key_workspace(key))
    assert_auth_style(recorded, key["key"], style)


def test_the_sdk_works_with_the_key_given_as_auth_token(server: Server, key: dict[str, Any]) -> None:
    recorded = Recorded()
    client = anthropic.Anthropic(
        api_key=None, auth_token=key["key"], base_url=server.base_url, max_retries=0, http_client=recorded.client
    )
    message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.usage.output_tokens == 16
    assert_auth_style(recorded, key["key"], "bearer")


@pytest.mark.parametrize("style", STYLES)
def test_the_sdk_streams_text_and_a_final_message_in_either_auth_style(
    server: Server, key: dict[str, Any], style: str
) -> None:
    recorded = Recorded()
    client = sdk(server, key["key"], style, recorded)
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=MESSAGES, extra_headers={"anthropic-simulator-output-tokens": "12"}
    ) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert_gateway_headers(stream.response, server, key_workspace(key))
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith(SIMULATED_TEXT + " ")  # sentences, separated by spaces
    assert sum(-(-len(word) // 9) for word in text.split(" ")) == 12  # nine characters a token at most
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.id.startswith("msg_")
    assert final.model == MODEL_ID
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 12
    assert final.usage.input_tokens > 0
    assert_auth_style(recorded, key["key"], style)


@pytest.mark.parametrize("style", STYLES)
def test_the_sdk_counts_tokens_in_either_auth_style(server: Server, key: dict[str, Any], style: str) -> None:
    recorded = Recorded()
    client = sdk(server, key["key"], style, recorded)
    short = client.messages.count_tokens(model=MODEL, messages=MESSAGES)
    long = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "word " * 400}])
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens
    # count_tokens agrees with what a message reports as its input
    message = client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert message.usage.input_tokens == short.input_tokens
    assert_auth_style(recorded, key["key"], style)


@pytest.mark.parametrize("style", STYLES)
def test_the_sdk_lists_and_retrieves_models_in_either_auth_style(
    server: Server, key: dict[str, Any], style: str
) -> None:
    recorded = Recorded()
    client = sdk(server, key["key"], style, recorded)
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert MODEL_ID in ids
    assert "claude-haiku-4-5-20251001" in ids
    assert all(model.type == "model" for model in models)
    model = client.models.retrieve(MODEL_ID)
    assert model.id == MODEL_ID
    assert model.display_name == "Claude Sonnet 4.6"
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("claude-no-such-model")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert_auth_style(recorded, key["key"], style)


# --------------------------------------------------------------------------------------------------
# refusals


def test_a_request_without_a_key_is_refused_with_401(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, headers={"anthropic-version": "2023-06-01"}, verify=TLS) as http:
        response = http.post("/v1/messages", json=REQUEST)
    assert_error(response, 401, "authentication_error", "missing credentials")
    assert_gateway_headers(response, server, None)


def test_an_unknown_key_is_refused_with_401_in_either_auth_style(server: Server) -> None:
    made_up = "sk-ant-api03-" + "x" * 93 + "AA"
    with server.http(made_up) as http:
        assert_error(http.post("/v1/messages", json=REQUEST), 401, "authentication_error", "invalid x-api-key")
    bearer = {"anthropic-version": "2023-06-01", "authorization": f"Bearer {made_up}"}
    response = httpx.post(f"{server.base_url}/v1/messages", json=REQUEST, headers=bearer, verify=TLS)
    assert_error(response, 401, "authentication_error", "invalid x-api-key")
    with pytest.raises(anthropic.AuthenticationError):
        sdk(server, made_up, "bearer").messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)


@pytest.mark.parametrize("status", ["inactive", "archived"])
def test_an_inactive_or_archived_key_is_refused_with_401(server: Server, status: str) -> None:
    key = create_key(server)
    with server.http(key["key"]) as http:
        assert http.post("/v1/messages", json=REQUEST).status_code == 200
        server.client().organization.api_keys.update(key["id"], status=status)  # type: ignore[arg-type]
        deadline = time.monotonic() + 2
        while (response := http.post("/v1/messages", json=REQUEST)).status_code == 200:
            assert time.monotonic() < deadline, f"the {status} key still works"
            time.sleep(0.05)
    assert_error(response, 401, "authentication_error", f"this API key is {status}")
    assert_gateway_headers(response, server, None)
    for style in STYLES:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            sdk(server, key["key"], style).messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
        assert status in caught.value.message


def test_an_expired_key_is_refused_with_401_and_reads_expired(server: Server) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    key = create_key(server, expires_at=expires.isoformat().replace("+00:00", "Z"))
    assert key["status"] == "active"
    with server.http(key["key"]) as http:
        assert http.post("/v1/messages", json=REQUEST).status_code == 200  # cached as valid now
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.3)
        response = http.post("/v1/messages", json=REQUEST)
    assert_error(response, 401, "authentication_error", "expired")
    assert server.client().organization.api_keys.retrieve(key["id"]).status == "expired"
    with pytest.raises(anthropic.AuthenticationError):
        sdk(server, key["key"], "bearer").messages.count_tokens(model=MODEL, messages=MESSAGES)


def test_an_admin_key_on_the_data_plane_is_refused_with_403(server: Server) -> None:
    with server.http(server.admin_key) as http:
        for method, path, body in [
            ("POST", "/v1/messages", REQUEST),
            ("POST", "/v1/messages/count_tokens", {"model": MODEL, "messages": MESSAGES}),
            ("GET", "/v1/models", None),
        ]:
            response = http.request(method, path, json=body)
            assert_error(response, 403, "permission_error", "admin API keys cannot call the Messages API")
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk(server, server.admin_key, "bearer").messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)


def test_a_workspace_header_must_match_the_keys_workspace(server: Server, key: dict[str, Any]) -> None:
    workspace = server.client().organization.workspaces.create(name=unique("other"))
    own = key_workspace(key)
    with server.http(key["key"]) as http:
        refused = http.post("/v1/messages", json=REQUEST, headers={"anthropic-workspace-id": workspace.id})
        assert_error(refused, 403, "permission_error", "does not match this API key's workspace")
        assert workspace.id in refused.json()["error"]["message"]
        assert_gateway_headers(refused, server, own)
        matched = http.post("/v1/messages", json=REQUEST, headers={"anthropic-workspace-id": own})
    assert matched.status_code == 200, matched.text
    assert_gateway_headers(matched, server, own)
    client = sdk(server, key["key"], "bearer")
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_headers={"anthropic-workspace-id": workspace.id}
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/complete"), ("GET", "/v1/foo"), ("POST", "/v1/foo"), ("GET", "/v1/messages")],
)
def test_an_unknown_data_plane_path_answers_404_naming_the_path(
    server: Server, http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, json=REQUEST if method == "POST" else None)
    assert_error(response, 404, "not_found_error", path)


def test_a_body_that_is_not_json_is_refused_with_400(server: Server, key: dict[str, Any], http: httpx.Client) -> None:
    response = http.post("/v1/messages", content=b'{"model": "claude-sonnet-4-6", "max_tokens": ', headers={
        "content-type": "application/json"})  # fmt: skip
    assert_error(response, 400, "invalid_request_error", "not valid JSON")
    assert_gateway_headers(response, server, key_workspace(key))
    response = http.post("/v1/messages", json=["not", "an", "object"])
    assert_error(response, 400, "invalid_request_error", "JSON object")


# --------------------------------------------------------------------------------------------------
# data residency


def test_a_workspace_restricted_to_us_refuses_global_and_applies_its_default_geo(server: Server) -> None:
    workspace = server.client().organization.workspaces.create(
        name=unique("us-only"),
        data_residency={"workspace_geo": "us", "allowed_inference_geos": ["us"], "default_inference_geo": "us"},
    )
    key = create_key(server, workspace.id)
    with server.http(key["key"]) as http:
        refused = http.post("/v1/messages", json={**REQUEST, "inference_geo": "global"})
        assert_error(refused, 400, "invalid_request_error", "'global' is not allowed")
        assert_gateway_headers(refused, server, workspace.id)
        explicit = http.post("/v1/messages", json={**REQUEST, "inference_geo": "us"})
        assert explicit.status_code == 200, explicit.text
        defaulted = http.post("/v1/messages", json=REQUEST)
        assert defaulted.status_code == 200, defaulted.text
    # the upstream saw the workspace's default, and the usage record carries it
    assert defaulted.json()["usage"]["inference_geo"] == "us"
    record = wait_for_record(server, defaulted.headers["request-id"])
    assert record.inference_geo == "us"
    assert record.workspace_id == workspace.id
    assert wait_for_record(server, explicit.headers["request-id"]).inference_geo == "us"
    assert refused.headers["request-id"] not in read_records(server)
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(server, key["key"], "bearer").messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_body={"inference_geo": "eu"}
        )
    assert "'eu'" in caught.value.message


# --------------------------------------------------------------------------------------------------
# upstream failures


@pytest.mark.parametrize(
    ("fault", "error_type", "message", "exception"),
    [
        ("429", "rate_limit_error", "simulated rate limit", anthropic.RateLimitError),
        ("500", "api_error", "simulated internal error", anthropic.InternalServerError),
        ("529", "overloaded_error", "simulated overload", anthropic.OverloadedError),
    ],
)
def test_upstream_errors_pass_through_with_their_status_and_envelope(
    server: Server, key: dict[str, Any], http: httpx.Client, fault: str, error_type: str, message: str, exception: type
) -> None:
    headers = {"anthropic-simulator-fault": fault}
    response = http.post("/v1/messages", json=REQUEST, headers=headers)
    assert response.status_code == int(fault)
    expected = simulate(REQUEST, headers)
    assert response.content == expected.content  # the upstream's envelope, byte for byte
    assert response.json()["error"] == {"type": error_type, "message": message}
    assert_gateway_headers(response, server, key_workspace(key))
    streamed = http.post("/v1/messages", json={**REQUEST, "stream": True}, headers=headers)
    assert streamed.status_code == int(fault)
    assert streamed.json()["error"]["type"] == error_type
    with pytest.raises(exception) as caught:
        sdk(server, key["key"], "bearer").messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_headers=headers
        )
    assert caught.value.status_code == int(fault)


def test_a_stream_cut_by_the_upstream_ends_with_an_sse_error_event(
    server: Server, key: dict[str, Any], http: httpx.Client
) -> None:
    headers = {"anthropic-simulator-fault": "cut", "anthropic-simulator-output-tokens": "20"}
    response = http.post("/v1/messages", json={**REQUEST, "stream": True}, headers=headers)
    assert response.status_code == 200
    events = sse_events(response.content)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names.count("content_block_delta") == 10  # half of the 20 tokens got through
    assert "message_stop" not in names
    assert names[-1] == "error"
    error = events[-1][1]
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert error["request_id"] == response.headers["request-id"]
    client = sdk(server, key["key"], "bearer")
    stream = client.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES, extra_headers=headers)
    with stream as live, pytest.raises(anthropic.APIStatusError) as caught:  # raised on the error event
        live.until_done()
    assert "interrupted" in str(caught.value)


# --------------------------------------------------------------------------------------------------
# orgwarden's response headers, faithful forwarding


def test_every_data_plane_response_carries_request_organization_and_workspace_headers(
    server: Server, key: dict[str, Any], http: httpx.Client
) -> None:
    workspace = key_workspace(key)
    responses = [
        http.post("/v1/messages", json=REQUEST),
        http.post("/v1/messages", json={**REQUEST, "stream": True}),
        http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": MESSAGES}),
        http.get("/v1/models"),
        http.get(f"/v1/models/{MODEL_ID}"),
        http.get("/v1/models/claude-unknown"),  # the upstream's 404
        http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-fault": "529"}),
        http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"}),  # refused after auth
        http.post("/v1/messages", json=REQUEST, headers={"anthropic-workspace-id": "wrkspc_other"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 529, 400, 403]
    for response in responses:
        assert_gateway_headers(response, server, workspace)
    ids = [r.headers["request-id"] for r in responses]
    assert len(set(ids)) == len(ids)
    # refused before authentication: still a request id and the organization
    anonymous = httpx.post(f"{server.base_url}/v1/messages", json=REQUEST, verify=TLS)
    assert anonymous.status_code == 401
    assert_gateway_headers(anonymous, server, None)


def test_a_non_streaming_response_is_the_simulators_body_byte_for_byte(
    server: Server, key: dict[str, Any], http: httpx.Client
) -> None:
    headers = {"anthropic-simulator-output-tokens": "7"}
    request = {**REQUEST, "system": "Be brief.", "metadata": {"user_id": "u-1"}}
    response = http.post("/v1/messages", json=request, headers=headers)
    expected = simulate(request, headers)
    assert response.status_code == expected.status_code == 200
    got, want = response.json(), expected.json()
    assert got["id"] != want["id"]  # fresh per call; everything else is identical
    assert response.content.replace(got["id"].encode(), want["id"].encode()) == expected.content
    assert response.headers["content-type"] == expected.headers["content-type"]
    assert response.headers["content-length"] == str(len(response.content))
    assert got["usage"] == want["usage"]
    assert got["usage"]["output_tokens"] == 7


def test_a_streaming_response_is_the_simulators_event_stream_byte_for_byte(
    server: Server, key: dict[str, Any], http: httpx.Client
) -> None:
    headers = {"anthropic-simulator-output-tokens": "9"}
    request = {**REQUEST, "stream": True}
    response = http.post("/v1/messages", json=request, headers=headers)
    expected = simulate(request, headers)
    assert response.status_code == 200
    got_id = sse_events(response.content)[0][1]["message"]["id"]
    want_id = sse_events(expected.content)[0][1]["message"]["id"]
    assert response.content.replace(got_id.encode(), want_id.encode()) == expected.content
    names = [name for name, _ in sse_events(response.content)]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 9 + [
        "content_block_stop", "message_delta", "message_stop"]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# dedicated servers: request size limit and upstream timeout; a real HTTP upstream


@pytest.fixture(scope="module")
def tight_server() -> Iterator[Server]:
    """The in-process simulator behind a 2 KiB body limit and a 1-second upstream timeout."""
    settings = {"ORGWARDEN_MAX_REQUEST_BYTES": "2048", "ORGWARDEN_UPSTREAM_TIMEOUT_SECONDS": "1"}
    with dedicated_server("sqlite", settings) as srv:
        yield srv


def test_a_body_over_the_configured_maximum_is_refused_with_413(tight_server: Server) -> None:
    key = create_key(tight_server)
    big = {**REQUEST, "messages": [{"role": "user", "content": "x" * 4096}]}
    with tight_server.http(key["key"]) as http:
        assert http.post("/v1/messages", json=REQUEST).status_code == 200  # small bodies pass
        response = http.post("/v1/messages", json=big)
        assert_error(response, 413, "request_too_large", "larger than the limit of 2048 bytes")
        # without a content-length (chunked), the limit is enforced while reading
        chunks = iter([json.dumps(big).encode()[i : i + 512] for i in range(0, 4300, 512)])
        chunked = http.post("/v1/messages", content=chunks, headers={"content-type": "application/json"})
        assert_error(chunked, 413, "request_too_large", "2048 bytes")
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(tight_server, key["key"], "bearer").messages.create(model=MODEL, max_tokens=16, messages=big["messages"])
    assert caught.value.status_code == 413


def test_an_upstream_that_does_not_answer_in_time_gives_504(tight_server: Server) -> None:
    key = create_key(tight_server)
    with tight_server.http(key["key"]) as http:
        started = time.monotonic()
        response = http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-fault": "timeout"})
        elapsed = time.monotonic() - started
    assert_error(response, 504, "timeout_error", "did not answer in time")
    assert 0.9 <= elapsed < 5, elapsed
    assert_gateway_headers(response, tight_server, key_workspace(key))
    record = wait_for_record(tight_server, response.headers["request-id"])  # it reached the upstream
    assert (record.status, record.output_tokens, record.cost_picodollars) == (504, 0, 0)
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk(tight_server, key["key"], "bearer").messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_headers={"anthropic-simulator-fault": "timeout"}
        )
    assert caught.value.status_code == 504


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[Server, str, subprocess.Popen[str]]]:
    """orgwarden with a real HTTP upstream (``orgwarden simulator`` on its own port) and a global
    upstream key, so requests take the pooled-client path; yields the server, the upstream URL and
    the upstream process (a test may stop it)."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-test-") as tmp:
        port = free_port()
        upstream_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
        upstream = subprocess.Popen(
            [ORGWARDEN, "simulator", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        db = make_database("sqlite", Path(tmp))
        db.env.update(
            {
                "ORGWARDEN_UPSTREAM": upstream_url,
                "ORGWARDEN_UPSTREAM_API_KEY": "sk-test",
                "ORGWARDEN_UPSTREAM_TIMEOUT_SECONDS": "1",
            }
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(f"{upstream_url}/v1/models", timeout=1, verify=TLS)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "orgwarden simulator did not start"
                    time.sleep(0.1)
            srv = start_server(db, Path(tmp))
            try:
                yield srv, upstream_url, upstream
            finally:
                stop_server(srv)
        finally:
            upstream.kill()
            upstream.wait()
            drop_database(db)


def test_through_a_real_http_upstream_the_body_and_stream_come_back_byte_for_byte(
    relay: tuple[Server, str, subprocess.Popen[str]],
) -> None:
    server, upstream_url, _ = relay
    assert f"upstream: {upstream_url}" in server.log()
    key = create_key(server)
    headers = {"anthropic-version": "2023-06-01", "anthropic-simulator-output-tokens": "5"}
    for request in (REQUEST, {**REQUEST, "stream": True}):
        direct = httpx.post(f"{upstream_url}/v1/messages", json=request, headers=headers, verify=TLS)
        with server.http(key["key"]) as http:
            relayed = http.post("/v1/messages", json=request, headers=headers)
        assert relayed.status_code == direct.status_code == 200
        if request.get("stream"):
            got_id = sse_events(relayed.content)[0][1]["message"]["id"]
            want_id = sse_events(direct.content)[0][1]["message"]["id"]
        else:
            got_id, want_id = relayed.json()["id"], direct.json()["id"]
        assert relayed.content.replace(got_id.encode(), want_id.encode()) == direct.content
        assert relayed.headers["content-type"] == direct.headers["content-type"]
        assert_gateway_headers(relayed, server, key_workspace(key))
    message = sdk(server, key["key"], "x-api-key").messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.usage.output_tokens == 16
    with pytest.raises(anthropic.OverloadedError):
        sdk(server, key["key"], "bearer").messages.create(
            model=MODEL, max_tokens=16, messages=MESSAGES, extra_headers={"anthropic-simulator-fault": "529"}
        )


def test_through_a_real_http_upstream_a_timeout_gives_504(relay: tuple[Server, str, subprocess.Popen[str]]) -> None:
    server, _, _ = relay
    key = create_key(server)
    with server.http(key["key"]) as http:
        response = http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-fault": "timeout"})
    assert_error(response, 504, "timeout_error", "in time")
    assert_gateway_headers(response, server, key_workspace(key))


def test_an_upstream_that_cannot_be_reached_gives_502(relay: tuple[Server, str, subprocess.Popen[str]]) -> None:
    server, upstream_url, upstream = relay
    key = create_key(server)
    with server.http(key["key"]) as http:
        assert http.post("/v1/messages", json=REQUEST).status_code == 200
        upstream.kill()  # the upstream goes away: its port is closed now
        upstream.wait()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{upstream_url}/v1/models", timeout=1, verify=TLS)
        for _ in range(2):  # the first may meet a pooled connection the upstream dropped
            response = http.post("/v1/messages", json=REQUEST)
            assert_error(response, 502, "api_error", "could not be reached")
            assert_gateway_headers(response, server, key_workspace(key))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk(server, key["key"], "bearer").messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert caught.value.status_code == 502
