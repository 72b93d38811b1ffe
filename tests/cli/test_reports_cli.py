"""``orgwarden report usage|cost|claude-code``, run as the real command against a SQLite database whose
usage was written by the gateway's own recorder (``gateway.recorder.Recorder``, records and rollups in
one transaction) and whose Claude Code telemetry went through the receiver's service
(``ClaudeCodeService.ingest``), so every figure below is what a report of real traffic would show.

Each CLI call costs about two seconds of imports, so the calls are few and each checks a lot: the
table, CSV and JSON figures exactly, paging through more than one page, the implicit fast-mode beta,
and one refusal.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orgwarden.config import load_settings
from orgwarden.crypto import SecretBox, resolve_secret
from orgwarden.data import load_catalog
from orgwarden.domain.claude_code import (
    COMMITS,
    COST,
    DELTA,
    EDIT_DECISIONS,
    LINES_OF_CODE,
    PULL_REQUESTS,
    SESSIONS,
    TOKENS,
    Sample,
)
from orgwarden.domain.pricing import TokenUsage, cost_of
from orgwarden.domain.rollups import NOT_AVAILABLE, Entry
from orgwarden.gateway.recorder import Recorder
from orgwarden.services.claude_code import Sender
from orgwarden.services.container import Services
from orgwarden.services.context import Context
from orgwarden.storage import migrate
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.cli.test_cli import one_line_error
from tests.conftest import Database, cli

SONNET, HAIKU, OPUS = "claude-sonnet-4-6", "claude-haiku-4-5-20251001", "claude-opus-4-6"


@dataclass(frozen=True)
class Known:
    default_workspace: str
    other_workspace: str


NOON = int(datetime(2026, 10, 1, 12, tzinfo=UTC).timestamp()) * 10**9


def claude_code_samples() -> list[tuple[str, list[Sample]]]:
    """Claude Code telemetry of 2026-10-01, as decoded from exports: (sending key name, points).

    * alice@acme.test (a user, in VS Code): 2 sessions, 1 commit, 1 pull request, +120/-30 lines,
      Sonnet 4.6 tokens 1000 in / 200 out / 500 cache read / 100 cache creation costing 1.23 cents,
      Opus 4.6 costing 0.5 cents; Edit accepted 3 times and rejected once;
    * the ``ci-bot`` key (no user: the key is the actor): 1 session, Haiku 10 in / 5 out, 0.07 cents.
    """

    def point(metric: str, value: int, **attributes: str) -> Sample:
        series = f"{metric}:{sorted(attributes.items())}"
        return Sample(metric, series, DELTA, NOON - 60 * 10**9, NOON, value, attributes)

    alice = {"user.email": "alice@acme.test", "terminal.type": "vscode"}
    return [
        ("alice-laptop", [
            point(SESSIONS, 2, **alice), point(COMMITS, 1, **alice), point(PULL_REQUESTS, 1, **alice),
            point(LINES_OF_CODE, 120, type="added", **alice), point(LINES_OF_CODE, 30, type="removed", **alice),
            *(point(TOKENS, n, type=kind, model=SONNET, **alice)
              for kind, n in (("input", 1000), ("output", 200), ("cacheRead", 500), ("cacheCreation", 100))),
            point(COST, 12_300_000_000, model=SONNET, **alice), point(COST, 5_000_000_000, model=OPUS, **alice),
            point(EDIT_DECISIONS, 3, tool_name="Edit", decision="accept", **alice),
            point(EDIT_DECISIONS, 1, tool_name="Edit", decision="reject", **alice),
        ]),
        ("ci-bot", [
            point(SESSIONS, 1, **{"terminal.type": "non-interactive"}),
            point(TOKENS, 10, type="input", model=HAIKU), point(TOKENS, 5, type="output", model=HAIKU),
            point(COST, 700_000_000, model=HAIKU),
        ]),
    ]  # fmt: skip


def record_usage(db: Database) -> Known:
    """Initialize ``db`` and record three ``/v1/messages`` requests the way the gateway meters them.

    * 2026-10-01 10:15:30, default workspace, key ``key_a``, Sonnet 4.6, geo global: 1,000 input,
      500 output, 2,000 cache-read tokens ($3 / $15 per MTok: 0.3 + 0.75 + 0.06 cents);
    * 2026-10-01 10:45:00, the other workspace, key ``key_b``, Haiku 4.5 (no inference geo: shown as
      ``not_available``): 200 input, 100 output, 2 web searches (0.02 + 0.05 + 2 cents);
    * 2026-10-02 23:59:10, default workspace, ``key_a``, Opus 4.6 in fast mode, geo ``us`` (x1.1):
      10 input, 20 output ($5 / $25: 0.0055 + 0.055 cents).
    """
    settings = load_settings(**db.settings_kwargs)
    migrate.upgrade(settings)
    catalog = load_catalog(settings.models_file)

    async def write() -> Known:
        from orgwarden.cli.runtime import cli_context

        engine = create_engine(settings)
        try:
            uow = UnitOfWorkFactory(session_factory(engine))
            services = Services.build(uow, settings, SecretBox(resolve_secret(settings)), catalog)
            await services.organizations.bootstrap(org_name="Acme", admin_email="root@acme.test", admin_name="Root")
            ctx: Context = await cli_context(services)
            default = await services.api_keys.default_workspace_id(ctx.organization_id)
            other = (await services.workspaces.create(ctx, name="research")).id
            recorder = Recorder(uow)
            requests: list[tuple[str, str, str, str, str, str, TokenUsage]] = [
                ("2026-10-01T10:15:30", default, "key_a", SONNET, "global", "standard",
                 TokenUsage(1000, 500, 0, 0, 2000, 0)),
                ("2026-10-01T10:45:00", other, "key_b", HAIKU, "global", "standard", TokenUsage(200, 100, 0, 0, 0, 2)),
                ("2026-10-02T23:59:10", default, "key_a", OPUS, "us", "fast", TokenUsage(10, 20, 0, 0, 0, 0)),
            ]  # fmt: skip
            for number, (at, workspace, key, name, geo, speed, usage) in enumerate(requests):
                model = catalog.find(name)
                assert model is not None
                parts = cost_of(catalog, model, usage, inference_geo=geo)
                record: dict[str, Any] = dict(
                    id=f"req_{number}", organization_id=ctx.organization_id, workspace_id=workspace, api_key_id=key,
                    model=model.id, service_tier="standard", inference_geo=geo, context_window="0-200k", speed=speed,
                    endpoint="messages", stream=False, completed=True, usage_estimated=False, user_id=None,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens, cache_creation_5m_tokens=usage.cache_creation_5m,
                    cache_creation_1h_tokens=usage.cache_creation_1h, cache_read_tokens=usage.cache_read,
                    web_search_requests=usage.web_search_requests, cost_picodollars=parts.total, status=200,
                    latency_ms=100, created_at=datetime.fromisoformat(at).replace(tzinfo=UTC),
                )  # fmt: skip
                report_geo = geo if model.geo_multiplier_applies else NOT_AVAILABLE
                await recorder.put("usage", record, Entry(record, parts, report_geo))
            await recorder.stop()  # writes everything queued: records and rollups, one transaction

            for name, samples in claude_code_samples():
                key = (await services.api_keys.create(ctx, name=name, workspace_id=None)).key
                sender = Sender(ctx.organization_id, key.id)
                await services.claude_code.ingest(sender, samples, datetime(2026, 10, 1, 12, 1, tzinfo=UTC))
            return Known(default, other)
        finally:
            await engine.dispose()

    return asyncio.run(write())


def table_rows(text: str) -> list[list[str]]:
    """The rows of a Rich table, header first (drawn with ┃, the body with │), cells stripped."""
    return [
        [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith(("│", "┃"))
    ]


def test_usage_table_and_paged_json_export_show_the_recorded_usage_exactly(
    sqlite_database: Database, tmp_path: Path
) -> None:
    db = sqlite_database
    known = record_usage(db)

    table = cli(db, "report", "usage", "--start", "2026-10-01", "--end", "2026-10-03",
                "--group-by", "workspace_id", "--group-by", "model")  # fmt: skip
    assert "Usage report (1d buckets)" in table.stdout
    assert table_rows(table.stdout) == [
        ["starting_at", "ending_at", "workspace_id", "model", "uncached_input_tokens",
         "cache_creation.ephemeral_5m_input_tokens", "cache_creation.ephemeral_1h_input_tokens",
         "cache_read_input_tokens", "output_tokens", "server_tool_use.web_search_requests"],
        ["2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z", "", SONNET, "1000", "0", "0", "2000", "500", "0"],
        ["2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z", known.other_workspace, HAIKU, "200", "0", "0", "0", "100",
         "2"],
        ["2026-10-02T00:00:00Z", "2026-10-03T00:00:00Z", "", OPUS, "10", "0", "0", "0", "20", "0"],
    ]  # fmt: skip

    # Per minute over two days: 2,880 buckets, two pages of at most 1,440. Grouping and filtering by
    # speed works without any beta flag (the CLI passes fast-mode-2026-02-01 itself).
    out = tmp_path / "usage.json"
    exported = cli(db, "report", "usage", "--start", "2026-10-01T00:00:00Z", "--end", "2026-10-03T00:00:00Z",
                   "--width", "1m", "--group-by", "speed", "--group-by", "inference_geo", "--speed", "fast",
                   "--speed", "standard", "--model", SONNET, "--model", OPUS, "--format", "json",
                   "--output", str(out))  # fmt: skip
    assert exported.stdout == ""
    answer = json.loads(out.read_text())
    assert set(answer) == {"data", "has_more", "next_page"}
    assert (answer["has_more"], answer["next_page"]) == (False, None)
    buckets = answer["data"]
    assert len(buckets) == 2880
    assert buckets[0]["starting_at"] == "2026-10-01T00:00:00Z"
    assert buckets[-1]["ending_at"] == "2026-10-03T00:00:00Z"
    used = {b["starting_at"]: b["results"] for b in buckets if b["results"]}
    assert list(used) == ["2026-10-01T10:15:00Z", "2026-10-02T23:59:00Z"]  # the Haiku request filtered out
    (sonnet,) = used["2026-10-01T10:15:00Z"]
    (opus,) = used["2026-10-02T23:59:00Z"]  # on the second page
    assert (sonnet["speed"], sonnet["inference_geo"], sonnet["model"]) == ("standard", "global", None)
    assert (opus["speed"], opus["inference_geo"]) == ("fast", "us")
    assert opus["uncached_input_tokens"] == 10
    assert opus["output_tokens"] == 20
    assert sonnet["cache_read_input_tokens"] == 2000
    assert sonnet["cache_creation"] == {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0}


def test_cost_and_claude_code_csv_have_exact_rows_and_a_refusal_is_one_line(sqlite_database: Database) -> None:
    db = sqlite_database
    known = record_usage(db)
    result = cli(db, "report", "cost", "--start", "2026-10-01T00:00:00Z", "--end", "2026-10-03T00:00:00Z",
                 "--group-by", "workspace_id", "--group-by", "description", "--format", "csv")  # fmt: skip
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["starting_at", "ending_at", "workspace_id", "description", "cost_type", "model", "service_tier",
                       "token_type", "context_window", "inference_geo", "amount", "currency"]  # fmt: skip
    day1, day2 = ("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z"), ("2026-10-02T00:00:00Z", "2026-10-03T00:00:00Z")
    other = known.other_workspace
    assert rows[1:] == [
        [*day1, "", "Claude Sonnet 4.6 Usage - Cache Read Input Tokens", "tokens", SONNET, "standard",
         "cache_read_input_tokens", "0-200k", "global", "0.06", "USD"],
        [*day1, "", "Claude Sonnet 4.6 Usage - Input Tokens", "tokens", SONNET, "standard", "uncached_input_tokens",
         "0-200k", "global", "0.3", "USD"],
        [*day1, "", "Claude Sonnet 4.6 Usage - Output Tokens", "tokens", SONNET, "standard", "output_tokens",
         "0-200k", "global", "0.75", "USD"],
        [*day1, other, "Claude Haiku 4.5 Usage - Input Tokens", "tokens", HAIKU, "standard", "uncached_input_tokens",
         "0-200k", "not_available", "0.02", "USD"],
        [*day1, other, "Claude Haiku 4.5 Usage - Output Tokens", "tokens", HAIKU, "standard", "output_tokens",
         "0-200k", "not_available", "0.05", "USD"],
        [*day1, other, "Web Search", "web_search", "", "", "", "", "", "2", "USD"],
        [*day2, "", "Claude Opus 4.6 Usage - Input Tokens", "tokens", OPUS, "standard", "uncached_input_tokens",
         "0-200k", "us", "0.0055", "USD"],
        [*day2, "", "Claude Opus 4.6 Usage - Output Tokens", "tokens", OPUS, "standard", "output_tokens", "0-200k",
         "us", "0.055", "USD"],
    ]  # fmt: skip

    claude_code = cli(db, "report", "claude-code", "--date", "2026-10-01", "--format", "csv")
    rows = list(csv.reader(io.StringIO(claude_code.stdout)))
    tools = [f"{tool}.{d}" for tool in ("edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool")
             for d in ("accepted", "rejected")]  # fmt: skip
    assert rows == [
        ["date", "actor_type", "actor", "terminal_type", "num_sessions", "commits_by_claude_code",
         "pull_requests_by_claude_code", "lines_added", "lines_removed", "input_tokens", "output_tokens",
         "cache_read_tokens", "cache_creation_tokens", "estimated_cost_cents", "models", *tools],
        # API actors first (by key id), then users; the key is shown by its name, as the API shows it
        ["2026-10-01", "api_actor", "ci-bot", "non-interactive", "1", "0", "0", "0", "0", "10", "5", "0", "0",
         "0.07", HAIKU, *["0"] * 8],
        ["2026-10-01", "user_actor", "alice@acme.test", "vscode", "2", "1", "1", "120", "30", "1000", "200", "500",
         "100", "1.73", f"{OPUS} {SONNET}", "3", "1", *["0"] * 6],
    ]  # fmt: skip

    refused = cli(db, "report", "usage", "--start", "2026-10-01", "--width", "2h", check=False)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert one_line_error(refused) == "error: bucket_width: '2h' is not one of 1m, 1h, 1d"
