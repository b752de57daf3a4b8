"""inbox index on handled_at, for retention

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 10:30:00

The workers now delete inbox entries past ``SKYBOOK_INBOX_RETENTION_HOURS``, oldest first
(``platform.retention``); without an index on ``handled_at`` each round would read the whole
table. New entries land at the index's right edge, so keeping it costs each consumer transaction
little. On PostgreSQL it is built ``CONCURRENTLY`` (outside the migration's transaction), so an
existing deployment keeps handling events while a large inbox is indexed.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], postgresql_concurrently=True)
    else:
        op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
