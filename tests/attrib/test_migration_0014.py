"""Migration 0014 on SQLite and PostgreSQL: rows rolled up before it have no user (""), rows of
several users stay apart, and going back down sums them into the old key (totals kept)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from orgwarden.storage import migrate
from tests.conftest import Database
from tests.integration.test_migrations import on_connection, settings_of

_ROW = (
    "INSERT INTO usage_rollups (organization_id, bucket_width, bucket_start, workspace_id, api_key_id, model,"
    " service_tier, context_window, inference_geo, speed, requests, input_tokens, output_tokens,"
    " cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, web_search_requests, cost_input,"
    " cost_output, cost_cache_write_5m, cost_cache_write_1h, cost_cache_read, cost_web_search, estimated_requests"
    "{user_column}) VALUES ('org', '1d', '2026-10-01', 'wrkspc_a', :key, 'm', 'standard', '0-200k', 'global',"
    " 'standard', 1, 10, 20, 0, 0, 0, 0, 100, 200, 0, 0, 0, 0, 0{user_value})"
)


def _rows(connection: Connection) -> list[tuple[object, ...]]:
    columns = "api_key_id, requests, output_tokens, cost_output"
    has_user = "user_id" in {c["name"] for c in _columns(connection)}
    query = f"SELECT {columns}{', user_id' if has_user else ''} FROM usage_rollups ORDER BY 1, {4 + has_user}"
    return [tuple(row) for row in connection.execute(text(query))]


def _columns(connection: Connection) -> list[dict[str, object]]:
    from sqlalchemy import inspect

    return list(inspect(connection).get_columns("usage_rollups"))  # type: ignore[arg-type]


def test_0014_keeps_old_rows_keeps_users_apart_and_merges_them_going_down(database: Database) -> None:
    settings = settings_of(database)
    migrate.upgrade(settings, "0010")

    def before(connection: Connection) -> None:
        connection.execute(text(_ROW.format(user_column="", user_value="")), {"key": "apikey_a"})
        connection.commit()

    on_connection(database, before)
    migrate.upgrade(settings, "0014")

    def after(connection: Connection) -> list[tuple[object, ...]]:
        for user in ("user_a", "user_b"):
            connection.execute(
                text(_ROW.format(user_column=", user_id", user_value=", :user")), {"key": "", "user": user}
            )
        connection.commit()
        return _rows(connection)

    assert on_connection(database, after) == [
        ("", 1, 20, 200, "user_a"), ("", 1, 20, 200, "user_b"), ("apikey_a", 1, 20, 200, ""),
    ]  # fmt: skip
    migrate.downgrade(settings, "0010")
    assert on_connection(database, _rows) == [("", 2, 40, 400), ("apikey_a", 1, 20, 200)]
    migrate.upgrade(settings)
