"""hold refusal function: lets the one-statement hold undo itself when a cabin has no room

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 06:10:00

On PostgreSQL a single-segment hold is one statement (seats taken, order, segment and events
written) that runs as its own transaction: one round trip instead of four. When the booking class
had room but its cabin did not, the class's count was already raised inside that statement; the
statement then calls ``skybook_refuse('sold_out')``, which raises SQLSTATE ``SB409``, so the whole
statement - and with it the class's count - is rolled back. VOLATILE, so the planner never
evaluates it ahead of the row that needs it. Nothing on SQLite (holds there run statement by
statement inside an explicit transaction).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION skybook_refuse(reason text) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'SB409', MESSAGE = reason;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION skybook_refuse(text)")
