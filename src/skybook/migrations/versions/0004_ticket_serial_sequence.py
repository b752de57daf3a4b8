"""ticket serials from a sequence on PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 23:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A counter row made every ticketing transaction wait for the one before it to commit; a
    # sequence hands out serials without a lock. Serials stay unique and increasing; a rolled-back
    # ticketing leaves a gap, as unused ticket stock does. SQLite (one writer) keeps the counter row.
    if op.get_bind().dialect.name != "postgresql":
        return
    start = op.get_bind().scalar(sa.text("SELECT COALESCE(MAX(last_serial), 0) + 1 FROM ticket_serials"))
    op.execute(f"CREATE SEQUENCE ticket_serial_seq START WITH {int(start)} MAXVALUE 9999999999 NO CYCLE")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP SEQUENCE ticket_serial_seq")
