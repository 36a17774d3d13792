"""outbox: no foreign key on study_id; the dead letters' index is partial

Each submission writes three outbox rows at ingest. A foreign key on study_id added a lookup and
a share lock on the study row to each (subject_id has none either), and an index on
(status, created_at) was rewritten at every step of a row's life. The dead-letter list reads
failed rows only: a partial index on finished_at where status is 'failed' serves it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 13:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAILED = "status = 'failed'"


def upgrade() -> None:
    op.drop_constraint(op.f('fk_outbox_events_study_id_studies'), 'outbox_events', type_='foreignkey')
    op.drop_index('ix_outbox_events_status_created', table_name='outbox_events')
    op.create_index('ix_outbox_events_failed', 'outbox_events', ['finished_at'], unique=False, postgresql_where=sa.text(FAILED))


def downgrade() -> None:
    op.drop_index('ix_outbox_events_failed', table_name='outbox_events', postgresql_where=sa.text(FAILED))
    op.create_index('ix_outbox_events_status_created', 'outbox_events', ['status', 'created_at'], unique=False)
    # Rows of a study deleted meanwhile would refuse the key; they go as the key would have taken them.
    op.execute('DELETE FROM outbox_events WHERE study_id IS NOT NULL AND study_id NOT IN (SELECT id FROM studies)')
    op.create_foreign_key(op.f('fk_outbox_events_study_id_studies'), 'outbox_events', 'studies', ['study_id'], ['id'], ondelete='CASCADE')
