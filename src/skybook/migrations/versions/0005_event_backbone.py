"""event backbone: per-broker sent markers on the outbox, dead letters, NOTIFY on insert

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import skybook.platform.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_sent_at", skybook.platform.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("tasks_sent_at", skybook.platform.db.UTCDateTime(timezone=True), nullable=True))
    # Events the embedded dispatcher already delivered are history: a relay started later must not
    # flood the brokers with them (consumers would skip them through the inbox anyway).
    op.execute(
        "UPDATE outbox SET stream_sent_at = dispatched_at, tasks_sent_at = dispatched_at "
        "WHERE dispatched_at IS NOT NULL"
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        for name, column in (
            ("ix_outbox_stream_pending", "stream_sent_at"),
            ("ix_outbox_tasks_pending", "tasks_sent_at"),
        ):
            batch_op.create_index(
                name,
                ["position"],
                unique=False,
                sqlite_where=sa.text(f"{column} IS NULL"),
                postgresql_where=sa.text(f"{column} IS NULL"),
            )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column(
            "envelope",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", skybook.platform.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", skybook.platform.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # One NOTIFY per inserting statement wakes the relay at commit (NOTIFY is transactional and
        # PostgreSQL folds duplicates within a transaction), so the relay need not poll.
        op.execute(
            "CREATE FUNCTION skybook_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_notify('skybook_outbox', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION skybook_outbox_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS skybook_outbox_notify()")
    op.drop_table("dead_letters")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_tasks_pending")
        batch_op.drop_index("ix_outbox_stream_pending")
        batch_op.drop_column("tasks_sent_at")
        batch_op.drop_column("stream_sent_at")
