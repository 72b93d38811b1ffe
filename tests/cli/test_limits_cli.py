"""``orgwarden rate-limits`` and ``orgwarden spend-limits``, run as real subprocesses against a real
SQLite database (the CLI's code is the same on PostgreSQL, where the services behind it are tested
through the Admin API, and ``tests/cli/test_cli.py`` runs a CLI flow there): the same checks as the
Admin API, the same audit events (actor ``cli``) and the same cache events, so that a running
gateway hears of a change made here."""

from __future__ import annotations

import json

from orgwarden.storage.tables import AuditEvent, CacheEvent, RateLimitValue, SpendLimit
from tests.cli.test_cli import cli_json, init, one_line_error, rows
from tests.conftest import Database, cli, unique


def test_rate_limits_list_and_set_at_every_level(sqlite_database: Database) -> None:
    database = sqlite_database  # the CLI is one code path; test_admin_keys_* runs it on PostgreSQL
    org = init(database)["organization"]["id"]
    entries = cli_json(database, "rate-limits", "list")
    assert [e["group_type"] for e in entries][-5:] == ["batch", "token_count", "files", "skills", "web_search"]
    assert all(e["limits"] == [] for e in entries)
    sonnet = cli_json(database, "rate-limits", "list", "--model", "claude-sonnet-4-6")
    assert len(sonnet) == 1
    assert "claude-sonnet-4-6" in sonnet[0]["models"]
    assert [e["group_type"] for e in cli_json(database, "rate-limits", "list", "--group-type", "batch")] == ["batch"]

    # by group name, at the organization level (implied)
    entry = cli_json(database, "rate-limits", "set", "claude-sonnet-4", "--rpm", "500", "--otpm", "40000")
    assert entry["id"] == sonnet[0]["id"]
    assert entry["limits"] == [{"type": "requests_per_minute", "value": 500},
                               {"type": "output_tokens_per_minute", "value": 40000}]  # fmt: skip
    # by rate_limit_id, for a workspace
    workspace = cli_json(database, "workspaces", "create", unique("ws"))
    override = cli_json(
        database, "rate-limits", "set", entry["id"], "--level", "workspace", "--workspace", workspace["id"],
        "--itpm-cache-aware", "1000",
    )  # fmt: skip
    assert override["type"] == "workspace_rate_limit"
    assert override["limits"] == [{"org_limit": None, "source": {"type": "workspace"},
                                   "type": "input_tokens_per_minute_cache_aware", "value": 1000}]  # fmt: skip
    listed = cli_json(database, "rate-limits", "list", "--workspace", workspace["id"], "--include-inherited")
    assert [(v["type"], v["source"]["type"]) for v in listed[0]["limits"]] == [
        ("requests_per_minute", "organization"),
        ("input_tokens_per_minute_cache_aware", "workspace"),
        ("output_tokens_per_minute", "organization"),
    ]
    # by model, for an API key; then cleared
    key = cli_json(database, "keys", "create", "--name", unique("k"))
    own = cli_json(database, "rate-limits", "set", "claude-sonnet-4-6", "--key", key["id"], "--itpm", "777")
    assert own["api_key_id"] == key["id"]
    assert own["limits"] == [{"source": {"type": "api_key"}, "type": "input_tokens_per_minute", "value": 777}]
    cleared = cli_json(database, "rate-limits", "set", "claude-sonnet-4", "--key", key["id"], "--clear", "itpm")
    assert cleared["limits"] == []
    assert cli_json(database, "rate-limits", "list", "--key", key["id"]) == []

    stored = {(r.scope_type, r.limiter, r.value) for r in rows(database, RateLimitValue)}
    assert stored == {("organization", "requests_per_minute", 500), ("organization", "output_tokens_per_minute", 40000),
                      ("workspace", "input_tokens_per_minute_cache_aware", 1000)}  # fmt: skip
    events = [e for e in rows(database, AuditEvent) if e.action == "rate_limit.update"]
    assert [(e.actor_type, e.details["level"]) for e in events] == [
        ("cli", "organization"), ("cli", "workspace"), ("cli", "api_key"), ("cli", "api_key")
    ]  # fmt: skip
    assert [c.entity_id for c in rows(database, CacheEvent) if c.entity_type == "rate_limits"] == [org] * 4

    table = cli(database, "rate-limits", "list").stdout
    assert "Claude Sonnet 4.x" in table
    assert "requests_per_minute" in table


def test_rate_limit_cli_refusals_are_one_line(sqlite_database: Database) -> None:
    database = sqlite_database
    init(database)
    default = cli_json(database, "workspaces", "list")[0]["id"]
    cases: list[tuple[tuple[str, ...], str]] = [
        (("rate-limits", "set", "claude-nothing-9", "--rpm", "5"), "'claude-nothing-9' not found"),
        (("rate-limits", "set", "batch"), "nothing to change"),
        (("rate-limits", "set", "batch", "--rpm", "0"), "--rpm: must be at least 1"),
        (("rate-limits", "set", "batch", "--clear", "tpd"), "--clear: 'tpd'"),
        (("rate-limits", "set", "batch", "--workspace", default, "--rpm", "5"), "default workspace"),
        (("rate-limits", "set", "batch", "--level", "workspace", "--rpm", "5"), "--level workspace needs --workspace"),
        (("rate-limits", "list", "--group-type", "galaxy"), "group_type: 'galaxy'"),
    ]
    for args, message in cases:
        result = cli(database, *args, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert message in one_line_error(result), args
    assert rows(database, RateLimitValue) == []


def test_spend_limits_set_list_effective_and_delete(sqlite_database: Database) -> None:
    database = sqlite_database  # the CLI is one code path; test_admin_keys_* runs it on PostgreSQL
    org = init(database)["organization"]["id"]
    workspace = cli_json(database, "workspaces", "create", unique("ws"))
    key = cli_json(database, "keys", "create", "--name", unique("k"), "--workspace", workspace["id"])

    org_limit = cli_json(database, "spend-limits", "set", "--amount-cents", "100000")
    assert org_limit["scope"] == {"type": "organization"}
    assert (org_limit["period"], org_limit["amount"], org_limit["alert_thresholds"]) == ("monthly", "100000",
                                                                                         [50, 80, 100])  # fmt: skip
    ws_limit = cli_json(
        database, "spend-limits", "set", "--scope", "workspace", "--workspace", workspace["id"], "--amount-cents",
        "2500", "--period", "monthly", "--alert-thresholds", "90,50",
    )  # fmt: skip
    assert ws_limit["alert_thresholds"] == [50, 90]
    again = cli_json(database, "spend-limits", "set", "--workspace", workspace["id"], "--amount-cents", "none")
    assert again["id"] == ws_limit["id"]
    assert again["amount"] is None
    assert again["alert_thresholds"] == [50, 90]
    key_limit = cli_json(
        database, "spend-limits", "set", "--scope", "api-key", "--key", key["id"], "--amount-cents", "300",
        "--period", "daily",
    )  # fmt: skip
    assert key_limit["scope"] == {"type": "api_key", "api_key_id": key["id"]}

    listed = cli_json(database, "spend-limits", "list")
    assert [s["id"] for s in listed] == [org_limit["id"], ws_limit["id"], key_limit["id"]]
    only_ws = cli_json(database, "spend-limits", "list", "--scope-type", "workspace")
    assert [s["id"] for s in only_ws] == [ws_limit["id"]]
    assert "$1,000.00" in cli(database, "spend-limits", "list").stdout

    effective = cli_json(database, "spend-limits", "effective", "--key", key["id"])
    assert [(r["period"], r["source"]["type"], r["amount"], r["period_to_date_spend"]) for r in effective] == [
        ("daily", "api_key", "300", "0"),
        ("monthly", "organization", "100000", "0"),  # the workspace's monthly limit has no cap
    ]
    assert key["id"] in cli(database, "spend-limits", "effective").stdout

    deleted = cli_json(database, "spend-limits", "delete", key_limit["id"])
    assert deleted == {"id": key_limit["id"], "type": "spend_limit_deleted"}
    assert {r.id for r in rows(database, SpendLimit)} == {org_limit["id"], ws_limit["id"]}
    actions = [(e.action, e.actor_type) for e in rows(database, AuditEvent) if e.action.startswith("spend_limit.")]
    assert actions == [("spend_limit.create", "cli"), ("spend_limit.create", "cli"), ("spend_limit.update", "cli"),
                       ("spend_limit.create", "cli"), ("spend_limit.delete", "cli")]  # fmt: skip
    assert [c.entity_id for c in rows(database, CacheEvent) if c.entity_type == "spend_limits"] == [org] * 5


def test_spend_limit_cli_refusals_are_one_line(sqlite_database: Database) -> None:
    database = sqlite_database
    init(database)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("spend-limits", "set", "--amount-cents", "12.5"), "amount: '12.5'"),
        (("spend-limits", "set", "--amount-cents", "5", "--period", "hourly"), "period: 'hourly'"),
        (("spend-limits", "set", "--amount-cents", "5", "--alert-thresholds", "a,b"), "--alert-thresholds"),
        (("spend-limits", "set", "--amount-cents", "5", "--workspace", "wrkspc_01000000000000000000000000"),
         "not found"),
        (("spend-limits", "set", "--amount-cents", "5", "--scope", "user"), "--scope user needs --user ID"),
        (("spend-limits", "set", "--amount-cents", "5", "--scope", "seat-tier"), "--scope: 'seat-tier'"),
        (("spend-limits", "delete", "spl_01000000000000000000000000"), "not found"),
        (("spend-limits", "list", "--scope-type", "seat_tier"), "orgwarden supports organization, workspace"),
    ]  # fmt: skip
    for args, message in cases:
        result = cli(database, *args, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert message in one_line_error(result), args
    assert rows(database, SpendLimit) == []
    assert json.loads(cli(database, "spend-limits", "list", "--json").stdout) == []
