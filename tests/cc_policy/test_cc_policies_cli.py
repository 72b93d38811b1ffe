"""``orgwarden cc-policies``, the real command on SQLite: a group's policy set (by the group's name,
settings from standard input and from a file), shown, listed and deleted; the default policy set and
cleared; the mode and the order; the refusals as one line and exit status 1 (an unknown settings key
named, an unknown group, a stale order); every change audited as the Admin API's are, with actor
``cli``. The resolution rules and the data plane are tested through the Admin API
(``test_cc_policies.py``): the CLI calls the same service. Each CLI start costs about 1.5 s, so the
invocations are few."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import select

from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import ORGWARDEN, Database, cli, query_db

SONNET, OPUS = "claude-sonnet-4-5", "claude-opus-4-1"


def cli_in(db: Database, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` with ``stdin`` as the command's standard input."""
    env = {**os.environ, **db.env, "COLUMNS": "200"}
    env.pop("ORGWARDEN_CONFIG", None)
    return subprocess.run([ORGWARDEN, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_policies_from_the_cli_are_validated_and_audited(sqlite_database: Database, tmp_path: Path) -> None:
    db = sqlite_database
    org = json.loads(cli(db, "init", "--json").stdout)["organization"]["id"]
    group = as_json(cli(db, "groups", "create", "Engineering", "--json"))["id"]

    settings = {"permissions": {"deny": ["WebFetch"]}, "model": "sonnet"}
    created = as_json(cli_in(
        db, json.dumps(settings), "cc-policies", "set", "Engineering", "--settings", "-",
        "--email-domain", "@Acme.Test", "--email-domain", "corp.acme.test", "--allowed-model", SONNET,
        "--denied-model", OPUS, "--json",
    ))  # fmt: skip
    assert created["rbac_group_id"] == group
    assert created["type"] == "claude_code_rbac_group_managed_settings"
    assert (created["settings"], created["email_domains"]) == (settings, ["acme.test", "corp.acme.test"])
    assert (created["allowed_models"], created["denied_models"]) == ([SONNET], [OPUS])

    bad = tmp_path / "bad.json"
    bad.write_text('{"permisions": {"deny": []}}')
    assert refusal(cli(db, "cc-policies", "set", group, "--settings", str(bad), check=False)) == (
        "error: settings: unknown top-level key 'permisions': not a Claude Code setting"
    )
    assert refusal(cli(db, "cc-policies", "set", "Nobody", "--allowed-model", SONNET, check=False)) == (
        "error: RBAC group 'Nobody' not found"
    )
    assert refusal(cli(db, "cc-policies", "reorder", "Engineering", "--version", "v0", check=False)).startswith(
        "error: rbac_group_order_version is not the current version"
    )

    # The default policy: settings from a file.
    base = tmp_path / "base.json"
    base.write_text('{"env": {"DISABLE_TELEMETRY": "1"}}')
    default = as_json(
        cli(db, "cc-policies", "default", "set", "--settings", str(base), "--allowed-model", SONNET, "--json")
    )
    assert (default["settings"], default["allowed_models"], default["denied_models"]) == (
        {"env": {"DISABLE_TELEMETRY": "1"}}, [SONNET], [],
    )  # fmt: skip
    assert as_json(cli(db, "cc-policies", "set-mode", "organization", "--json"))["mode"] == {"type": "organization"}

    listed = cli(db, "cc-policies", "list").stdout  # the table names the group
    words = (group, "Engineering", "active")
    assert [word for word in listed.split() if word in words] == list(words)
    shown = as_json(cli(db, "cc-policies", "show", "Engineering", "--json"))
    assert shown == created | {"updated_at": shown["updated_at"]}
    assert as_json(cli(db, "cc-policies", "default", "clear", "--json"))["settings"] is None
    gone = as_json(cli(db, "cc-policies", "delete", group, "--json"))
    assert gone == {"rbac_group_id": group, "type": "claude_code_rbac_group_managed_settings_deleted"}
    config = as_json(cli(db, "cc-policies", "config", "--json"))
    assert (config["mode"], config["rbac_group_order"]) == ({"type": "organization"}, [])

    async def audited(uow: UnitOfWork) -> list[AuditEvent]:
        stmt = select(AuditEvent).where(AuditEvent.action.like("claude_code_managed_settings.%"))
        return list((await uow.audit.session.scalars(stmt.order_by(AuditEvent.seq))).all())

    events = query_db(db, audited)
    assert [(e.action.split(".")[1], e.target_id) for e in events] == [
        ("rbac_group_create", group),
        ("default_update", org),
        ("configuration_update", org),
        ("default_update", org),
        ("rbac_group_delete", group),
    ]
    assert {(e.actor_type, e.outcome) for e in events} == {("cli", "success")}
    assert events[-2].details["after"] == {"settings_keys": None, "allowed_models": None, "denied_models": []}
