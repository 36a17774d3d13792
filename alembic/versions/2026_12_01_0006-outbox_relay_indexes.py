"""outbox relay indexes: unpublished rows, and published rows by lease

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNPUBLISHED = 'completed_at IS NULL AND published_at IS NULL'
LEASED = 'completed_at IS NULL AND published_at IS NOT NULL'


def upgrade() -> None:
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['created_at', 'id'], unique=False, postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))
    op.create_index('ix_outbox_events_leased', 'outbox_events', ['lease_until'], unique=False, postgresql_where=sa.text(LEASED), sqlite_where=sa.text(LEASED))


def downgrade() -> None:
    op.drop_index('ix_outbox_events_leased', table_name='outbox_events', postgresql_where=sa.text(LEASED), sqlite_where=sa.text(LEASED))
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text(UNPUBLISHED), sqlite_where=sa.text(UNPUBLISHED))
