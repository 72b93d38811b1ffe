"""Known traffic for the console tests: two keys (one in a named workspace, one in the default)
sending messages through the gateway with the official SDK (simulator upstream), and the Admin
API's reports to compare the pages with."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.console.conftest import ConsoleWorld

SONNET, OPUS = "claude-sonnet-4-5-20250929", "claude-opus-4-6"
USAGE, COST = "/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"


@dataclass
class Traffic:
    workspace_id: str
    workspace_name: str
    key_id: str
    key_name: str
    default_key_id: str
    month_start: str  # RFC 3339, this month's first midnight UTC
    output_tokens: int


def admin(world: ConsoleWorld, method: str, path: str, **kwargs: Any) -> Any:
    with world.admin() as http:
        response = http.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def report(world: ConsoleWorld, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    with world.admin() as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


_SENT: dict[str, Traffic] = {}


def send_traffic(world: ConsoleWorld) -> Traffic:
    """Three messages (one with 5,000 output tokens of Opus: about 12.5 cents) and wait until the
    usage report holds them (the recorder writes every 0.2 s). Once per world: the console files
    that run in one worker share it."""
    if world.base_url not in _SENT:
        _SENT[world.base_url] = _send(world)
    return _SENT[world.base_url]


def _send(world: ConsoleWorld) -> Traffic:
    workspace = admin(world, "POST", "/v1/organizations/workspaces", json={"name": "Console Research"})
    key = admin(
        world, "POST", "/v1/organizations/api_keys", json={"name": "research-bot", "workspace_id": workspace["id"]}
    )
    default_key = admin(world, "POST", "/v1/organizations/api_keys", json={"name": "default-app"})
    output = 0
    for secret, model, tokens in ((key["key"], OPUS, 5000), (key["key"], SONNET, 40), (default_key["key"], SONNET, 12)):
        client = world.server.client(api_key=secret)
        reply = client.messages.create(
            model=model,
            max_tokens=8000,
            messages=[{"role": "user", "content": "Summarize the quarterly numbers"}],
            extra_headers={"anthropic-simulator-output-tokens": str(tokens)},
        )
        output += reply.usage.output_tokens
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    deadline = time.monotonic() + 15
    while True:
        data = report(world, USAGE, [("starting_at", month), ("limit", "31")])["data"]
        seen = sum(r["output_tokens"] for bucket in data for r in bucket["results"])
        if seen >= output:
            break
        assert time.monotonic() < deadline, f"the usage report never reached {output} output tokens ({seen})"
        time.sleep(0.2)
    return Traffic(workspace["id"], workspace["name"], key["id"], key["name"], default_key["id"], month, output)


def tokens_of(result: dict[str, Any]) -> int:
    """Every token of a usage result: input, cache writes, cache reads, output."""
    cache = result["cache_creation"]
    return (
        result["uncached_input_tokens"] + result["cache_read_input_tokens"] + result["output_tokens"]
        + cache["ephemeral_5m_input_tokens"] + cache["ephemeral_1h_input_tokens"]
    )  # fmt: skip
