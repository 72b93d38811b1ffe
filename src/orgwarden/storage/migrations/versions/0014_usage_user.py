"""usage attributed to users: ``user_id`` on usage records and rollups

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

A request made with a user's access token (``ow-at01-…``) is the user's: its usage record carries
``user_id`` (null for API-key traffic, and for every record written before) and its ``api_key_id``
is the empty string (there is no key; the reports show null). The usage report groups and filters by
it (``account_id``) and user spend limits are summed from it.

``usage_rollups`` gets ``user_id`` as one more dimension of its primary key. A key column cannot be
null, so a row without a user has the empty string (every row rolled up before, and all API-key
traffic). On PostgreSQL the column is added to the partitioned table (a constant default: no
rewrite) and the primary key is rebuilt on the parent, which rebuilds each width's index.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_OLD_KEY = (
    "organization_id", "bucket_width", "bucket_start", "workspace_id", "api_key_id", "model", "service_tier",
    "context_window", "inference_geo", "speed",
)  # fmt: skip
_NEW_KEY = (*_OLD_KEY, "user_id")


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", _id(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("usage_rollups", sa.Column("user_id", _id(), server_default="", nullable=False))
        op.execute("ALTER TABLE usage_rollups DROP CONSTRAINT usage_rollups_pkey")
        op.execute(f"ALTER TABLE usage_rollups ADD CONSTRAINT usage_rollups_pkey PRIMARY KEY ({', '.join(_NEW_KEY)})")
        return
    with _new_key_warning_silenced(), op.batch_alter_table("usage_rollups", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("user_id", _id(), server_default="", nullable=False))
        batch_op.create_primary_key("pk_usage_rollups", list(_NEW_KEY))


@contextlib.contextmanager
def _new_key_warning_silenced() -> Iterator[None]:
    """SQLAlchemy warns that the copied table's reflected key differs from the one set here, which
    is the point of the copy (SQLite cannot change a primary key in place)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*specifies columns .* as primary_key=True.*")
        yield


def downgrade() -> None:
    """Rows of different users in one bucket and dimensions would collide under the old key: they
    are summed into one (the attribution is lost, the totals are kept)."""
    measures = (
        "requests", "input_tokens", "output_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens",
        "cache_read_tokens", "web_search_requests", "cost_input", "cost_output", "cost_cache_write_5m",
        "cost_cache_write_1h", "cost_cache_read", "cost_web_search", "estimated_requests",
    )  # fmt: skip
    keys = ", ".join(_OLD_KEY)
    sums = ", ".join(f"SUM({m}) AS {m}" for m in measures)
    merged = f"SELECT {keys}, {sums} FROM usage_rollups GROUP BY {keys}"  # noqa: S608 - constant names
    op.execute(f"CREATE TEMPORARY TABLE usage_rollups_merged AS {merged}")
    op.execute("DELETE FROM usage_rollups")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_rollups DROP CONSTRAINT usage_rollups_pkey")
        op.drop_column("usage_rollups", "user_id")
        op.execute(f"ALTER TABLE usage_rollups ADD CONSTRAINT usage_rollups_pkey PRIMARY KEY ({keys})")
    else:
        with _new_key_warning_silenced(), op.batch_alter_table("usage_rollups", recreate="always") as batch_op:
            batch_op.drop_column("user_id")
            batch_op.create_primary_key("pk_usage_rollups", list(_OLD_KEY))
    op.execute(f"INSERT INTO usage_rollups ({keys}, {', '.join(measures)}) SELECT * FROM usage_rollups_merged")  # noqa: S608
    op.execute("DROP TABLE usage_rollups_merged")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("user_id")
