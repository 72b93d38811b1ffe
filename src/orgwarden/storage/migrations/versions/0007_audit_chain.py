"""audit chain: hash-chained audit events, chain heads, append-only triggers

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

Every audit event gets ``seq`` (1, 2, 3, … per organization, unique), ``prev_hash`` and ``hash``
(``domain.audit_chain``), and every organization a chain head (``audit_chain_heads``). Events written
before this revision are sealed here, per organization in id order (ids are time-ordered, and until
now nothing else ordered them).

Then the database itself refuses UPDATE and DELETE on ``audit_events`` (and TRUNCATE on
PostgreSQL), whatever the client: a PL/pgSQL trigger function on PostgreSQL, ``RAISE(ABORT)``
triggers on SQLite. The triggers are the last step of the upgrade (sealing updates the rows) and the
first of the downgrade. A table owner can still disable them (``ALTER TABLE … DISABLE TRIGGER``);
that is what the hash chain is for. Note for later migrations: rebuilding ``audit_events`` on SQLite
(batch mode) drops its triggers, which then have to be created again.
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHUNK = 2000
MESSAGE = "audit_events is append-only: events cannot be changed or deleted"
PG_FUNCTION = "orgwarden_audit_events_append_only"
SQLITE_TRIGGERS = ("audit_events_no_update", "audit_events_no_delete")


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_chain_heads",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("organization_id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    _seal_existing_events()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ix_audit_events_org_seq", ["organization_id", "seq"], unique=True)
    _create_triggers()


def _seal_existing_events() -> None:
    from orgwarden.domain.audit_chain import GENESIS, event_hash

    bind = op.get_bind()
    events = sa.table(
        "audit_events",
        *(sa.column(name) for name in ("id", "organization_id", "actor_type", "actor_id", "actor_user_id", "action",
                                       "target_type", "target_id", "workspace_id", "request_id", "source_ip",
                                       "outcome", "seq", "prev_hash", "hash")),
        sa.column("occurred_at", sa.DateTime()),  # typed: SQLite hands back text otherwise
        sa.column("details", sa.JSON()),
    )  # fmt: skip
    heads = sa.table("audit_chain_heads", sa.column("organization_id"), sa.column("seq"), sa.column("hash"))
    organizations = bind.execute(sa.select(events.c.organization_id).distinct()).scalars().all()
    for organization_id in sorted(organizations):
        seq, link, after = 0, GENESIS, ""
        while True:
            chunk = bind.execute(
                sa.select(events)
                .where(events.c.organization_id == organization_id, events.c.id > after)
                .order_by(events.c.id)
                .limit(CHUNK)
            ).mappings().all()  # fmt: skip
            if not chunk:
                break
            after = chunk[-1]["id"]
            sealed = []
            for stored in chunk:
                row = dict(stored)
                row["occurred_at"] = row["occurred_at"].replace(tzinfo=UTC)
                seq += 1
                row["seq"], row["prev_hash"] = seq, link
                link = event_hash(row)
                sealed.append({"event_id": row["id"], "s": seq, "p": row["prev_hash"], "h": link})
            bind.execute(
                events.update()
                .where(events.c.id == sa.bindparam("event_id"))
                .values(seq=sa.bindparam("s"), prev_hash=sa.bindparam("p"), hash=sa.bindparam("h")),
                sealed,
            )
        bind.execute(heads.insert().values(organization_id=organization_id, seq=seq, hash=link))


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{MESSAGE} (% refused)', TG_OP;
            END;
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        return
    for name, operation in zip(SQLITE_TRIGGERS, ("UPDATE", "DELETE"), strict=True):
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE} ({operation} refused)'); END"
        )


def _drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def downgrade() -> None:
    _drop_triggers()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_org_seq")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
    op.drop_table("audit_chain_heads")
