"""The real Claude Code CLI, offline, through orgwarden and its simulator, does an agentic task.

``claude -p`` is asked (with the simulator's ``use NAME {json}`` directive) to write a file with its
Write tool. The simulator answers the first turn with a ``tool_use`` of Write, Claude Code runs the
tool, sends the ``tool_result``, and the simulator's final text reports it. Claude Code exports its
OpenTelemetry metrics to orgwarden's receiver, so the Claude Code report then shows the session and
the accepted Write. The server's access log tells which paths the CLI called.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import Server, dedicated_server, query_db, unique

MODEL = "claude-sonnet-4-6"
SMALL_MODEL = "claude-haiku-4-5"  # Claude Code's default models are newer than the catalog's
CONTENT = "written offline by Claude Code through orgwarden"
REPORT = "/v1/organizations/usage_report/claude_code"
ACCESS = re.compile(  # the gateway's access lines and the admin app's (telemetry) alike
    r'orgwarden\.access(?:\.http)?: \S+ \S+ "(?P<method>[A-Z]+) (?P<path>\S+)(?: HTTP/1\.1)?" (?P<status>\d{3})'
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with dedicated_server("sqlite", {}) as srv:
        yield srv


def create_key(server: Server) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("claude-code")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def claude_env(server: Server, key: str, home: Path) -> dict[str, str]:
    """A clean environment: nothing of the machine's own Claude or Anthropic settings leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL_MODEL,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": server.base_url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={key}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
    }


def usage_of(server: Server, key_id: str) -> list[UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return [r for r in await uow.usage.for_organization(server.organization["id"]) if r.api_key_id == key_id]

    return query_db(server.db, read)


def claude_code_record(server: Server, key_name: str, days: list[str]) -> dict[str, Any] | None:
    """This key's record of the Claude Code report, once it shows a session and an accepted Write."""
    with server.http() as http:
        for day in days:
            response = http.get(REPORT, params={"starting_at": day, "limit": 1000})
            assert response.status_code == 200, response.text
            for record in response.json()["data"]:
                if (
                    record["actor"] == {"type": "api_actor", "api_key_name": key_name}
                    and record["core_metrics"]["num_sessions"] >= 1
                    and record["tool_actions"]["write_tool"]["accepted"] >= 1
                ):
                    return dict(record)
    return None


def test_claude_code_writes_a_file_with_its_write_tool_through_orgwarden(server: Server, claude_code: Path) -> None:
    key = create_key(server)
    days = sorted({datetime.now(UTC).date().isoformat()})
    with tempfile.TemporaryDirectory(prefix="orgwarden-claude-") as tmp:
        home, project = Path(tmp) / "home", Path(tmp) / "project"
        home.mkdir()
        project.mkdir()
        target = project / "hello.txt"
        prompt = "use Write " + json.dumps({"file_path": str(target), "content": CONTENT})
        command = [
            str(claude_code), "-p", prompt, "--model", MODEL, "--output-format", "json",
            "--permission-mode", "acceptEdits", "--allowedTools", "Write",
        ]  # fmt: skip
        try:
            run = subprocess.run(
                command,
                cwd=project,
                env=claude_env(server, key["key"], home),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"claude did not finish in 180 s:\n{exc.stderr!r}\n{server.log()[-4000:]}") from None
        written = target.read_text() if target.exists() else None
    what = f"claude exited {run.returncode}\nstdout: {run.stdout[-3000:]}\nstderr: {run.stderr[-3000:]}"
    assert run.returncode == 0, what
    assert written == CONTENT, what
    result = json.loads(run.stdout)
    assert result["is_error"] is False, what
    assert result["num_turns"] >= 2, what
    assert "The Write tool returned: File created successfully" in result["result"], what
    assert str(target) in result["result"], what

    calls = [m.groupdict() for m in ACCESS.finditer(server.log())]
    called = sorted({(c["method"], c["path"].split("?")[0], c["status"]) for c in calls})
    assert ("POST", "/v1/messages", "200") in called, called
    assert all(c["status"] != "404" for c in calls), called

    answered = [c for c in calls if c["path"].split("?")[0] == "/v1/messages" and c["status"] == "200"]
    assert len(answered) >= 2, called  # the tool_use turn and the final answer, at least
    deadline = time.monotonic() + 30  # records are written in batches, just after their answers
    records = usage_of(server, key["id"])
    while len(records) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = usage_of(server, key["id"])
    assert len(records) == len(answered), called  # one record per answer, none lost
    assert all(r.model == MODEL or r.model.startswith(SMALL_MODEL) for r in records)
    assert all(r.status == 200 and r.output_tokens > 0 and r.input_tokens > 0 for r in records)

    days = sorted({*days, datetime.now(UTC).date().isoformat()})  # the run may have crossed midnight
    deadline = time.monotonic() + 30
    record = claude_code_record(server, key["name"], days)
    while record is None and time.monotonic() < deadline:
        time.sleep(0.5)
        record = claude_code_record(server, key["name"], days)
    assert record is not None, f"no Claude Code report record with a session and an accepted Write; {called}"
    assert record["tool_actions"]["write_tool"] == {"accepted": 1, "rejected": 0}
    assert any(m["model"] == MODEL for m in record["model_breakdown"]), record
