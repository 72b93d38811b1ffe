"""CLI refusals: each a separate ``orgwarden`` process answering with one line and exit code 1.

In a file of their own (not ``test_cli.py``) so that pytest-xdist, which hands out whole files,
runs these long loops of processes beside the other CLI flows rather than after them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.cli.test_cli import API_KEY, one_line_error, run, sqlite_env

__all__ = ["sqlite_env"]  # the fixture, imported for this module's tests


def test_refusals_of_keys_admin_keys_and_workspaces_are_one_line_errors(sqlite_env: dict[str, str]) -> None:
    assert run(sqlite_env, "init", "--json").returncode == 0
    (default,) = json.loads(run(sqlite_env, "workspaces", "list", "--json").stdout)
    archived = json.loads(run(sqlite_env, "workspaces", "create", "old", "--json").stdout)
    assert run(sqlite_env, "workspaces", "archive", archived["id"]).returncode == 0
    cases = [
        (("workspaces", "create", "DEFAULT"), "already exists"),
        (("workspaces", "archive", default["id"]), "default workspace cannot be archived"),
        (("keys", "create", "--name", "k", "--workspace", "wrkspc_nope"), "'wrkspc_nope' not found"),
        (("keys", "create", "--name", "k", "--workspace", archived["id"]), "is archived"),
        (("keys", "list", "--status", "bogus"), "status: 'bogus' is not one of"),
        (("admin-keys", "revoke", "apikey_nope"), "'apikey_nope' not found"),
        (("admin-keys", "create", "--user", "user_nope"), "'user_nope' not found"),
    ]
    for args, message in cases:
        result = run(sqlite_env, *args)
        assert result.returncode == 1, args
        assert message in one_line_error(result), args
        assert "Traceback" not in result.stderr


def test_expires_in_takes_minutes_hours_days_weeks_and_refuses_anything_else(sqlite_env: dict[str, str]) -> None:
    assert run(sqlite_env, "init", "--json").returncode == 0
    for duration in ("soon", "0d", "1y", "99999999999d", "9999999d"):
        result = run(sqlite_env, "keys", "create", "--name", "k", "--expires-in", duration)
        assert result.returncode != 0, duration
        line = one_line_error(result)
        assert "--expires-in" in line
        assert repr(duration) in line
    for duration, delta in (("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))):
        before = datetime.now(UTC)
        result = run(sqlite_env, "keys", "create", "--name", duration, "--expires-in", duration, "--json")
        expires = datetime.fromisoformat(json.loads(result.stdout)["expires_at"].replace("Z", "+00:00"))
        assert before + delta <= expires <= before + delta + timedelta(seconds=30)
    # the key secret is printed whole even at 80 columns
    result = run(sqlite_env, "keys", "create", "--name", "narrow", columns=80)
    assert result.returncode == 0, result.stderr
    assert "shown once" in result.stdout
    assert len([m for line in result.stdout.splitlines() for m in API_KEY.findall(line)]) == 1, result.stdout
    names = sorted(k["name"] for k in json.loads(run(sqlite_env, "keys", "list", "--json").stdout))
    assert names == ["2w", "30m", "narrow"]  # the refused ones created nothing


# --------------------------------------------------------------------------------------------------
# settings
