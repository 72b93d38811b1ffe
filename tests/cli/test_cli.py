"""The real ``orgwarden`` command, run as a subprocess against real databases (SQLite and PostgreSQL).

Where output width matters (secrets shown once must never be folded), commands run with
``COLUMNS=80``, the width rich assumes when the output is not a terminal (logs, pipes).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from orgwarden import __version__, ids
from orgwarden.config import load_settings
from orgwarden.storage.tables import AdminApiKey, Organization
from tests.conftest import ORGWARDEN, TLS, Database, cli, free_port, unique, wait_until_healthy

ADMIN_KEY = re.compile(r"sk-ant-admin01-[A-Za-z0-9_-]{93}AA")
API_KEY = re.compile(r"sk-ant-api03-[A-Za-z0-9_-]{93}AA")


def run(env: dict[str, str], *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``orgwarden ARGS`` with exactly ``env``'s ORGWARDEN_* settings (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
    return subprocess.run(
        [ORGWARDEN, *args],
        env={**clean, **env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def init(db: Database, *extra: str) -> dict[str, Any]:
    result = cli(db, "init", "--json", *extra)
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def cli_json(db: Database, *args: str) -> Any:
    return json.loads(cli(db, *args, "--json").stdout)


def rows(db: Database, table: Any) -> list[Any]:
    """Every row of an orgwarden table, read straight from the database."""
    settings = load_settings(**db.settings_kwargs)

    async def read() -> list[Any]:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.connect() as connection:
                return list((await connection.execute(select(table))).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {"ORGWARDEN_DATA_DIR": str(tmp_path / "data")}


# --------------------------------------------------------------------------------------------------
# init


def test_init_json_prints_exactly_one_object_with_the_organization_the_admin_and_the_key(database: Database) -> None:
    result = cli(database, "init", "--json", "--org-name", "Acme", "--admin-email", "Root@Acme.Test")
    payload = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(payload) == {"organization", "user", "admin_api_key"}
    organization, user = payload["organization"], payload["user"]
    assert str(uuid.UUID(organization["id"])) == organization["id"]
    assert organization == {"id": organization["id"], "name": "Acme", "type": "organization"}
    assert user["role"] == "admin"
    assert user["email"] == "root@acme.test"
    assert user["type"] == "user"
    assert ids.looks_like(ids.USER, user["id"])
    assert ADMIN_KEY.fullmatch(payload["admin_api_key"])
    assert len(payload["admin_api_key"]) == len("sk-ant-admin01-") + 95
    assert result.stderr == ""


def test_a_second_init_exits_1_says_so_and_changes_nothing(database: Database) -> None:
    first = init(database)
    again = cli(database, "init", "--json", "--org-name", "Other", "--admin-email", "x@y.zz", check=False)
    assert again.returncode == 1
    assert again.stdout == ""
    assert "already initialized" in one_line_error(again)

    organizations = rows(database, Organization)
    assert [(o.id, o.name) for o in organizations] == [(first["organization"]["id"], "My Organization")]
    admin_keys = cli_json(database, "admin-keys", "list")
    assert len(admin_keys) == 1
    assert admin_keys[0]["status"] == "active"
    assert admin_keys[0]["user_id"] == first["user"]["id"]
    assert admin_keys[0]["partial_key_hint"] == ids.partial_hint(first["admin_api_key"])
    (stored,) = rows(database, AdminApiKey)
    assert ids.secret_matches(first["admin_api_key"], stored.secret_hash)  # the first key still opens the door


def test_init_refuses_a_bad_admin_email_and_other_commands_need_init_first(sqlite_env: dict[str, str]) -> None:
    before = run(sqlite_env, "keys", "list")
    assert before.returncode == 1
    assert "not initialized: run `orgwarden init`" in one_line_error(before)
    refused = run(sqlite_env, "init", "--admin-email", "not-an-email")
    assert refused.returncode == 1
    assert "admin_email" in one_line_error(refused)
    # nothing was half-created: a proper init still works, and prints the key whole at 80 columns
    result = run(sqlite_env, "init", columns=80)
    assert result.returncode == 0, result.stderr
    assert "orgwarden initialized" in result.stdout
    keys = [match for line in result.stdout.splitlines() for match in ADMIN_KEY.findall(line)]
    assert len(keys) == 1, result.stdout


def test_version_prints_the_version(sqlite_env: dict[str, str]) -> None:
    result = run(sqlite_env, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"orgwarden {__version__}"


def test_loading_the_cli_loads_neither_the_database_layer_nor_the_server() -> None:
    """``--help``, ``--version`` and refusals of arguments or settings stay light: the command
    modules import storage, services, settings and the server where a command uses them."""
    heavy = ("sqlalchemy", "alembic", "fastapi", "pydantic", "httpx", "orgwarden.services", "orgwarden.storage")
    probe = (
        "import json, sys, orgwarden.cli.main\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({heavy!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []


def test_the_audit_list_limit_help_names_the_services_maximum() -> None:
    from orgwarden.cli import audit
    from orgwarden.services.audit_log import MAX_LIMIT

    assert audit.MAX_LIMIT == MAX_LIMIT


# --------------------------------------------------------------------------------------------------
# keys and workspaces


def test_keys_and_workspaces_create_list_and_archive(sqlite_database: Database) -> None:
    database = sqlite_database  # the CLI is one code path; test_admin_keys_* runs it on PostgreSQL
    init(database)
    name = unique("prod")
    workspace = cli_json(database, "workspaces", "create", name)
    assert workspace["name"] == name
    assert workspace["archived_at"] is None
    assert ids.looks_like(ids.WORKSPACE, workspace["id"])

    kept = cli_json(database, "keys", "create", "--name", "kept")
    assert API_KEY.fullmatch(kept["key"])
    assert len(kept["key"]) == 108
    assert kept["status"] == "active"
    assert kept["expires_at"] is None
    assert kept["workspace_id"] is None  # the default workspace
    assert kept["partial_key_hint"] == ids.partial_hint(kept["key"])

    before = datetime.now(UTC)
    doomed = cli_json(
        database, "keys", "create", "--name", "doomed", "--workspace", workspace["id"], "--expires-in", "90d"
    )
    after = datetime.now(UTC)
    assert doomed["workspace_id"] == workspace["id"]
    assert doomed["scope"] == {"type": "workspace", "workspace_id": workspace["id"]}
    expires = datetime.fromisoformat(doomed["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(days=90) <= expires <= after + timedelta(days=90)

    # secrets are shown once: never in a listing, JSON or table
    listing = cli(database, "keys", "list", "--json").stdout
    table = cli(database, "keys", "list").stdout
    for secret in (kept["key"], doomed["key"]):
        assert secret not in listing
        assert secret not in table
    assert all("key" not in k for k in json.loads(listing))
    assert {k["id"]: k["partial_key_hint"] for k in json.loads(listing)} == {
        kept["id"]: kept["partial_key_hint"],
        doomed["id"]: doomed["partial_key_hint"],
    }
    assert kept["id"] in table

    assert [w["name"] for w in cli_json(database, "workspaces", "list")] == ["Default", name]
    archived = cli_json(database, "workspaces", "archive", workspace["id"])
    assert archived["archived_at"] is not None
    assert [w["name"] for w in cli_json(database, "workspaces", "list")] == ["Default"]
    everything = cli_json(database, "workspaces", "list", "--include-archived")
    assert [w["id"] for w in everything] == [everything[0]["id"], workspace["id"]]
    # archiving a workspace archives its keys, and only its keys
    statuses = {k["id"]: k["status"] for k in cli_json(database, "keys", "list")}
    assert statuses == {kept["id"]: "active", doomed["id"]: "archived"}


def test_admin_keys_create_list_and_revoke(database: Database) -> None:
    first = init(database)
    created = cli_json(database, "admin-keys", "create", "--name", "ci")
    assert ADMIN_KEY.fullmatch(created["key"])
    assert created["name"] == "ci"
    assert created["status"] == "active"
    assert created["user_id"] == first["user"]["id"]
    assert created["type"] == "admin_api_key"

    listing = cli(database, "admin-keys", "list", "--json").stdout
    assert created["key"] not in listing
    assert first["admin_api_key"] not in listing
    by_id = {k["id"]: k for k in json.loads(listing)}
    assert len(by_id) == 2
    assert "key" not in by_id[created["id"]]
    assert by_id[created["id"]]["partial_key_hint"] == ids.partial_hint(created["key"])

    revoked = cli(database, "admin-keys", "revoke", created["id"])
    assert created["id"] in revoked.stdout
    by_id = {k["id"]: k for k in cli_json(database, "admin-keys", "list")}
    assert by_id[created["id"]]["status"] == "revoked"
    assert by_id[created["id"]]["revoked_at"] is not None
    assert [k["status"] for k in by_id.values() if k["id"] != created["id"]] == ["active"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ORGWARDEN_PORT", "notaport"),
        ("ORGWARDEN_DATABASE_URL", "mysql://x"),
        ("ORGWARDEN_LOG_LEVEL", "loud"),
        ("ORGWARDEN_PUBLIC_URL", "ftp://example.com"),
        ("ORGWARDEN_ADMIN_MAX_BODY_BYTES", "10"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it_and_exit_code_2(
    sqlite_env: dict[str, str], variable: str, value: str
) -> None:
    result = run({**sqlite_env, variable: value}, "keys", "list")
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert f"invalid setting {variable}" in line
    assert repr(value) in line
    assert result.stdout == ""
    assert not Path(sqlite_env["ORGWARDEN_DATA_DIR"]).exists()


@pytest.mark.parametrize("args", [("init", "--json"), ("serve",), ("db", "current")])
def test_every_command_checks_the_settings_first(sqlite_env: dict[str, str], args: tuple[str, ...]) -> None:
    result = run({**sqlite_env, "ORGWARDEN_PORT": "70000"}, *args)
    assert result.returncode == 2, result.stderr
    assert "invalid setting ORGWARDEN_PORT" in one_line_error(result)
    assert not Path(sqlite_env["ORGWARDEN_DATA_DIR"]).exists()


def test_a_toml_config_file_is_read_and_environment_variables_override_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-config"
    config = tmp_path / "orgwarden.toml"
    config.write_text(f'data_dir = "{data_dir}"\ninvite_ttl_days = 7\n')
    result = run({}, "--config", str(config), "init", "--json")
    assert result.returncode == 0, result.stderr
    assert (data_dir / "orgwarden.sqlite3").exists()
    # ORGWARDEN_CONFIG names the file too
    listed = run({"ORGWARDEN_CONFIG": str(config)}, "workspaces", "list", "--json")
    assert [w["name"] for w in json.loads(listed.stdout)] == ["Default"]
    # an environment variable beats the file
    env = {"ORGWARDEN_DATA_DIR": str(tmp_path / "env-dir")}
    assert run(env, "--config", str(config), "init", "--json").returncode == 0
    assert (tmp_path / "env-dir" / "orgwarden.sqlite3").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('data_dir = "/tmp/x"\ncolour = "blue"\n', "unknown setting 'colour'"),
        ("data_dir = \n", "is not valid TOML"),
        ('port = "x"\n', "invalid setting ORGWARDEN_PORT"),
    ],
)
def test_a_bad_config_file_is_refused_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "orgwarden.toml"
    config.write_text(content)
    result = run({"ORGWARDEN_DATA_DIR": str(tmp_path / "d")}, "--config", str(config), "keys", "list")
    assert result.returncode == 2
    assert message in one_line_error(result)


def test_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    result = run({}, "--config", str(tmp_path / "nowhere.toml"), "keys", "list")
    assert result.returncode == 2
    assert "cannot read config file" in one_line_error(result)


# --------------------------------------------------------------------------------------------------
# serve


def test_serve_on_an_empty_database_initializes_it_and_prints_the_admin_key(database: Database, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
    env = {**clean, **database.env, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as handle:
        process = subprocess.Popen(
            [ORGWARDEN, "serve", "--port", str(port)], env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, log)
        output = log.read_text()
        keys = [m for line in output.splitlines() for m in ADMIN_KEY.findall(line)]
        assert len(keys) == 1, output  # whole, on one line, although the output is 80 columns wide
        me = httpx.get(f"{base_url}/v1/organizations/me", headers={"x-api-key": keys[0]}, timeout=30, verify=TLS)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "My Organization"
        assert f"({me.json()['id']})" in output
    finally:
        process.terminate()
        process.wait(timeout=10)
    output = log.read_text()
    assert "Traceback" not in output
    assert f"on http://127.0.0.1:{port}" in output

    again = cli(database, "init", check=False)  # serve left it initialized
    assert again.returncode == 1
    assert "already initialized" in again.stderr
