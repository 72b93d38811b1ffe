"""``orgwarden spend-limits set --user``: a user's spend limit from the command line."""

from __future__ import annotations

from tests.cli.test_cli import cli_json, init, one_line_error
from tests.conftest import Database, cli


def test_the_cli_sets_a_users_spend_limit_and_refuses_mixed_scopes(sqlite_database: Database) -> None:
    database = sqlite_database
    user_id = init(database)["user"]["id"]
    limit = cli_json(database, "spend-limits", "set", "--user", user_id, "--amount-cents", "500", "--period", "daily")
    assert limit["scope"] == {"type": "user", "user_id": user_id}
    assert (limit["amount"], limit["period"]) == ("500", "daily")
    listed = cli(database, "spend-limits", "list").stdout
    assert user_id in listed
    mixed = cli(database, "spend-limits", "set", "--user", user_id, "--key", "apikey_x", "--amount-cents", "1",
                check=False)  # fmt: skip
    assert "--user sets a user's spend limit" in one_line_error(mixed)
    bare = cli(database, "spend-limits", "set", "--scope", "user", "--amount-cents", "1", check=False)
    assert "--scope user needs --user ID" in one_line_error(bare)
    unknown = cli(database, "spend-limits", "set", "--user", "user_0100000000000000000000000", "--amount-cents", "1",
                  check=False)  # fmt: skip
    assert "not found" in one_line_error(unknown)
