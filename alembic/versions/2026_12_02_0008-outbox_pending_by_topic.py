"""outbox: pending and unpublished rows indexed by topic, then age

The REDCap claim reads the oldest pending sync rows that have no sync state yet (claim.py),
and the relay the oldest unpublished rows of each topic whose queue can take more (relay.py):
with the topic first, each is one range of an index, not every pending row of every topic.
ix_outbox_events_pending_by_topic replaces ix_outbox_events_pending (created_at) (the backlog
view counts every pending row either way); ix_outbox_events_unpublished gains the topic.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = 'completed_at IS NULL'
UNPUBLISHED = 'completed_at IS NULL AND published_at IS NULL'


def upgrade() -> None:
    op.drop_index('ix_outbox_events_pending', table_name='outbox_events', postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.create_index('ix_outbox_events_pending_by_topic', 'outbox_events', ['topic', 'created_at', 'id'], unique=False, postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['topic', 'created_at', 'id'], unique=False, postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))


def downgrade() -> None:
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['created_at', 'id'], unique=False, postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))
    op.drop_index('ix_outbox_events_pending_by_topic', table_name='outbox_events', postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.create_index('ix_outbox_events_pending', 'outbox_events', ['created_at'], unique=False, postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
