"""Through orgwarden and its simulator: Claude Code's built-in models are routable, upstream errors
come back unmodified, and a user's spend limit warns (alerts at 75/95/100 % by default) and refuses
the way Claude Code recognises (400 ``invalid_request_error``, "You have reached your specified …
usage limits", which the CLI 2.1.332 classifies as ``usage_cap_reached``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.attrib.test_user_tokens_data_plane import new_team
from tests.conftest import TLS, Server, dedicated_server
from tests.gateway.test_forwarding import new_key

USER = [{"role": "user", "content": "hi"}]
CLAUDE_CODE_USAGE_CAP = re.compile(r"reached your specified[\w\s-]*?usage limits")  # the CLI's own pattern


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with dedicated_server("sqlite", {"ORGWARDEN_UPSTREAM": "simulator"}) as srv:
        yield srv


@pytest.mark.parametrize("model", ["claude-opus-5-5", "claude-haiku-5-5"])
def test_claude_codes_default_main_and_background_models_are_served_and_priced(server: Server, model: str) -> None:
    key = new_key(server)["key"]
    with server.http(key) as http:
        response = http.post("/v1/messages?beta=true", json={"model": model, "max_tokens": 16, "messages": USER})
        listed = http.get("/v1/models", params={"limit": 1000})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    assert model in [m["id"] for m in listed.json()["data"]]


def test_upstream_errors_come_back_unmodified_with_retry_after(server: Server) -> None:
    key = new_key(server)["key"]
    body = {"model": "claude-opus-5-5", "max_tokens": 16, "messages": USER}
    with server.http(key) as http:
        limited = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "429",
                                                                "anthropic-simulator-retry-after": "9"})  # fmt: skip
        overloaded = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "529"})
        broken = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "500"})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "9")
    assert (overloaded.status_code, overloaded.json()["error"]["type"]) == (529, "overloaded_error")
    assert (broken.status_code, broken.json()["error"]["type"]) == (500, "api_error")
    for response in (limited, overloaded, broken):  # the upstream's own envelope
        assert response.json()["type"] == "error"


def test_a_user_limit_gets_the_user_alert_thresholds_and_refuses_as_claude_code_expects(server: Server) -> None:
    team = new_team(server)
    with server.http() as admin:
        created = admin.post("/v1/organizations/spend_limits",
                             json={"amount": "1", "period": "daily",
                                   "scope": {"type": "user", "user_id": team.user["id"]}})  # fmt: skip
        org_limit = admin.get("/v1/organizations/spend_limits").json()["data"]
    assert created.status_code == 200, created.text
    assert created.json()["alert_thresholds"] == [75, 95, 100]
    assert all(s["alert_thresholds"] != [75, 95, 100] for s in org_limit if s["scope"]["type"] != "user")
    time.sleep(1.0)  # the limits are reloaded within a second
    refused = None
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        for _ in range(50):  # 1 cent: a few Opus answers of 500 output tokens each use it up
            response = http.post(
                "/v1/messages", json={"model": "claude-opus-5-5", "max_tokens": 500, "messages": USER},
                headers={"authorization": f"Bearer {team.token}", "anthropic-simulator-output-tokens": "500"},
            )  # fmt: skip
            if response.status_code != 200:
                refused = response
                break
    assert refused is not None
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert CLAUDE_CODE_USAGE_CAP.search(error["message"]), error["message"]
    assert "regain access on" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
