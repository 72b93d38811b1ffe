"""The data-plane access log (issue 15, point 7): one ``orgwarden.access`` line per answered request.

Real ``orgwarden serve`` processes, in each log format: requests through the official SDK and httpx
(a 200 JSON answer, a 200 stream, a 401, a 400 and a 404 from the upstream), then the server's own
log output is read back and each request id must appear on exactly one access line with the right
fields, no secret anywhere, and (``json``) every orgwarden line a JSON object.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import TLS, SdkHttpClient, Server, dedicated_server, unique

MODEL = "claude-sonnet-4-6"
UNKNOWN_MODEL = "claude-not-a-model-9"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello"}]
TEXT_LINE = re.compile(
    r"^\S+ \S+ INFO orgwarden\.access: (?P<request_id>req_\S+) (?P<client>\S+) (?P<request>\"[^\"]*\")"
    r" (?P<status>\d+) (?P<latency_ms>[\d.]+)ms key=(?P<key_id>\S+) workspace=(?P<workspace_id>\S+)"
    r" model=(?P<model>\"[^\"]*\") stream=(?P<stream>yes|no) input=(?P<input>\d+) output=(?P<output>\d+)"
    r" cache_write=(?P<cache_write>\d+) cache_read=(?P<cache_read>\d+) session=(?P<session>-|\"[^\"]*\")$"
)


def new_key(server: Server) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("access"), "workspace_id": None})
    assert response.status_code == 200, response.text
    return dict(response.json())


def traffic(server: Server, key: dict[str, Any]) -> dict[str, tuple[int, str, str | None, bool]]:
    """Requests of every kind; request id -> (status, model, key id, stream) expected on its line."""
    client = anthropic.Anthropic(
        api_key=key["key"], base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    expected: dict[str, tuple[int, str, str | None, bool]] = {}

    answer = client.messages.with_raw_response.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    expected[answer.headers["request-id"]] = (200, MODEL, key["id"], False)

    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=8, messages=MESSAGES, stream=True
    ) as stream:
        for _ in stream.iter_lines():
            pass
    expected[stream.headers["request-id"]] = (200, MODEL, key["id"], True)

    bad_key = httpx.post(
        server.base_url + "/v1/messages", json={}, headers={"x-api-key": "sk-ant-api03-wrong"}, verify=TLS
    )
    assert bad_key.status_code == 401
    expected[bad_key.headers["request-id"]] = (401, "", None, False)

    not_json = httpx.post(server.base_url + "/v1/messages", content=b"{", headers={"x-api-key": key["key"]}, verify=TLS)
    assert not_json.status_code == 400
    expected[not_json.headers["request-id"]] = (400, "", key["id"], False)

    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model=UNKNOWN_MODEL, max_tokens=8, messages=MESSAGES)
    expected[missing.value.response.headers["request-id"]] = (404, UNKNOWN_MODEL, key["id"], False)
    return expected


def access_lines(server: Server, parse: Callable[[str], dict[str, Any] | None], wanted: set[str]) -> list[Any]:
    """The access lines parsed from the server's log, once every wanted request id has one (each line
    is written as its request ends, which may be just after the client has the answer)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [parsed for line in server.log().splitlines() if (parsed := parse(line)) is not None]
        if wanted <= {line["request_id"] for line in lines} or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def parse_json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    parsed: dict[str, Any] = json.loads(line)
    return parsed if parsed["logger"] == "orgwarden.access" else None


def parse_text(line: str) -> dict[str, Any] | None:
    match = TEXT_LINE.match(line)
    if match is None:
        return None
    fields: dict[str, Any] = match.groupdict()
    method, path = json.loads(fields.pop("request")).split(" ", 1)
    model = json.loads(fields["model"])
    return {
        **fields,
        "method": method,
        "path": path,
        "model": model,
        "status": int(fields["status"]),
        "key_id": None if fields["key_id"] == "-" else fields["key_id"],
        "stream": fields["stream"] == "yes",
        "input_tokens": int(fields["input"]),
        "output_tokens": int(fields["output"]),
    }


@pytest.fixture(scope="module")
def json_server() -> Iterator[Server]:
    with dedicated_server("sqlite", {"ORGWARDEN_LOG_FORMAT": "json"}) as server:
        yield server


@pytest.fixture(scope="module")
def text_server() -> Iterator[Server]:
    with dedicated_server("sqlite", {"ORGWARDEN_LOG_FORMAT": "text"}) as server:
        yield server


def check(lines: list[dict[str, Any]], expected: dict[str, tuple[int, str, str | None, bool]], server: Server) -> None:
    for request_id, (status, model, key_id, stream) in expected.items():
        mine = [line for line in lines if line["request_id"] == request_id]
        assert len(mine) == 1, f"{len(mine)} access lines for {request_id}:\n{server.log()}"
        line = mine[0]
        assert (line["status"], line["model"], line["key_id"], line["stream"]) == (status, model, key_id, stream), line
        assert (line["method"], line["path"]) == ("POST", "/v1/messages")
        assert line["client"] == "127.0.0.1"
        assert float(line["latency_ms"]) >= 0
        if status == 200:
            assert line["input_tokens"] > 0
            assert line["output_tokens"] > 0
            assert line["workspace_id"].startswith("wrkspc_")


def test_json_format_writes_one_access_object_per_request_and_every_line_as_json(json_server: Server) -> None:
    key = new_key(json_server)
    expected = traffic(json_server, key)
    lines = access_lines(json_server, parse_json, set(expected))
    check(lines, expected, json_server)
    for line in lines:
        assert set(line) >= {
            "time", "level", "logger", "message", "request_id", "key_id", "workspace_id", "method", "path",
            "model", "status", "latency_ms", "input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens", "stream", "client",
        }  # fmt: skip
        assert line["level"] == "info"
        assert line["time"].endswith("Z")
    log = json_server.log()
    assert key["key"] not in log
    # Not only access lines: the server's own lines (logger orgwarden.server) are JSON as well.
    others = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    listening = [line for line in others if line["logger"] == "orgwarden.server" and "listening on" in line["message"]]
    assert listening
    assert listening[0]["level"] == "info"
    assert not [line for line in log.splitlines() if "orgwarden." in line and not line.startswith("{")]


def test_text_format_writes_one_access_line_per_request(text_server: Server) -> None:
    key = new_key(text_server)
    expected = traffic(text_server, key)
    lines = access_lines(text_server, parse_text, set(expected))
    check(lines, expected, text_server)
    assert key["key"] not in text_server.log()


def test_a_model_with_a_line_break_cannot_forge_a_second_line(text_server: Server) -> None:
    """A client-chosen string with CR LF (the model; a path with one is refused by the HTTP server
    before the gateway sees it) is quoted on its line, so no line of the log starts with it."""
    key = new_key(text_server)
    body = {"model": "x\r\nforged-line", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(
        text_server.base_url + "/v1/messages", json=body, headers={"x-api-key": key["key"]}, verify=TLS
    )
    request_id = response.headers["request-id"]
    lines = access_lines(text_server, parse_text, {request_id})
    (line,) = [line for line in lines if line["request_id"] == request_id]
    assert line["model"] == "x\r\nforged-line"
    assert not [raw for raw in text_server.log().splitlines() if raw.startswith("forged-line")]


def test_access_log_false_writes_no_access_line_while_metrics_still_count_the_request() -> None:
    with dedicated_server("sqlite", {"ORGWARDEN_ACCESS_LOG": "false"}) as server:
        response = httpx.post(
            server.base_url + "/v1/messages", json={}, headers={"x-api-key": "sk-ant-api03-x"}, verify=TLS
        )
        assert response.status_code == 401
        scrape = httpx.get(server.base_url + "/metrics", verify=TLS).text
        assert 'orgwarden_http_requests_total{method="POST",plane="data",route="messages",status="401"} 1.0' in scrape
        assert "orgwarden.access" not in server.log()
