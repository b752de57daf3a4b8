"""outbox NOTIFY only while a relay waits for one

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 09:05:00

Every transaction that wrote to the outbox called ``pg_notify``. PostgreSQL commits notifying
transactions one at a time (a cluster-wide lock held through the commit's WAL flush), so under
load the notification, which nobody needs while the relay is busy or when no relay runs at all,
serialised the writers' commits: pgbench on the hold transaction ran 2,227-2,290 tps with the
trigger and 2,612-3,046 without it on this machine.

The relay now holds the session advisory lock ``RELAY_IDLE_LOCK_KEY`` (exclusive) only while it
has caught up and waits for a wake-up. The trigger takes the same key shared for the rest of the
writer's transaction, which fails only while the relay waits (or is about to): then it notifies.
Nothing is lost either way: the relay takes the lock before it sleeps, which waits for every
writer that skipped the notification to commit, and reads the outbox once more after getting it.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# skybook.platform.messaging.relay.RELAY_IDLE_LOCK_KEY, written out: a migration does not change.
RELAY_IDLE_LOCK_KEY = 0x5B00C7E1B


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION skybook_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF NOT pg_try_advisory_xact_lock_shared({RELAY_IDLE_LOCK_KEY}) THEN "
        "PERFORM pg_notify('skybook_outbox', ''); END IF; RETURN NULL; END $$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION skybook_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('skybook_outbox', ''); RETURN NULL; END $$"
    )
